"""The shapes generator: determinism, tight boxes, and identical boxes from the VOC, COCO and TXT loaders."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from detkit.datasets import SHAPE_CLASSES, build_dataset, generate_shapes, shapes_dataset_cfg
from detkit.datasets.shapes import draw_shapes_image


def test_three_formats_load_identical_boxes_and_labels(shapes_root):
    datasets = {fmt: build_dataset(shapes_dataset_cfg(shapes_root, fmt)) for fmt in ('voc', 'coco', 'txt')}
    samples = list(generate_shapes(12, seed=7, size=160, split='train'))
    # filter_empty_gt could drop images; the generator always draws >= 1 object, so all 12 are there
    for fmt, ds in datasets.items():
        assert len(ds) == 12, fmt
        assert ds.metainfo['classes'] == SHAPE_CLASSES
    for i, s in enumerate(samples):
        for fmt, ds in datasets.items():
            ann = ds.get_ann_info(i)
            np.testing.assert_array_equal(ann['bboxes'], s.bboxes, err_msg=fmt)
            np.testing.assert_array_equal(ann['labels'], s.labels, err_msg=fmt)
            assert ann['bboxes_ignore'].shape == (0, 4)
            assert ds.get_data_info(i)['img_path'].endswith(f'{s.name}.jpg')


def test_same_seed_same_data_other_seed_or_split_differs():
    a = list(generate_shapes(3, seed=1, size=96))
    b = list(generate_shapes(3, seed=1, size=96))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.bboxes, y.bboxes)
    # image i does not depend on how many images are generated
    np.testing.assert_array_equal(list(generate_shapes(1, seed=1, size=96))[0].image, a[0].image)
    c = list(generate_shapes(3, seed=2, size=96))
    v = list(generate_shapes(3, seed=1, size=96, split='val'))
    assert not np.array_equal(a[0].image, c[0].image)
    assert not np.array_equal(a[0].image, v[0].image)


def test_boxes_are_tight_around_the_painted_shape():
    """Without noise a lone object's pixels have one colour: their bounding rectangle is the box."""
    for i in range(25):
        img, boxes, labels = draw_shapes_image(np.random.default_rng(i), size=128, max_objects=1, noise=False)
        assert boxes.shape == (1, 4) and len(labels) == 1
        x1, y1, x2, y2 = boxes[0].astype(int)
        colour = img[(y1 + y2) // 2, (x1 + x2) // 2]
        mask = (img == colour).all(axis=2).astype(np.uint8)
        mask[:y1] = mask[y2:] = 0  # ignore far-away background pixels that happen to match
        mask[:, :x1] = mask[:, x2:] = 0
        assert tuple(cv2.boundingRect(mask)) == (x1, y1, x2 - x1, y2 - y1), i


def test_learnable_statistics():
    """A handful of objects per image, none tiny, every class present."""
    samples = list(generate_shapes(40, seed=0, size=160))
    counts = [len(s.bboxes) for s in samples]
    assert 1 <= min(counts) and max(counts) <= 5 and np.mean(counts) >= 2
    sides = np.concatenate([np.minimum(s.bboxes[:, 2] - s.bboxes[:, 0], s.bboxes[:, 3] - s.bboxes[:, 1])
                            for s in samples])
    assert sides.min() >= 8  # occluded objects keep >= 60% of their pixels
    assert set(np.concatenate([s.labels for s in samples]).tolist()) == set(range(len(SHAPE_CLASSES)))


def test_argument_errors():
    with pytest.raises(ValueError, match='num_classes'):
        next(generate_shapes(1, num_classes=9))
    with pytest.raises(ValueError, match='fmt'):
        shapes_dataset_cfg('x', 'yolo')


def test_worker_processes_write_the_same_files(tmp_path):
    """Several spawned workers (chunks of 50 images) write byte-identical files to one process's."""
    import filecmp
    import os

    from detkit.datasets import write_shapes
    serial, parallel = tmp_path / 'serial', tmp_path / 'parallel'
    a = write_shapes(str(serial), num=120, fmt='all', seed=4, size=64, split='train', workers=1)
    b = write_shapes(str(parallel), num=120, fmt='all', seed=4, size=64, split='train', workers=2)
    assert a == {**b, 'configs': {k: {**v, 'data_root': str(serial)} for k, v in b['configs'].items()}}
    files = sorted(os.path.relpath(os.path.join(d, f), serial) for d, _, fs in os.walk(serial) for f in fs)
    assert len(files) == 120 * 3 + 4  # JPEGImages, images, Annotations + ImageSets, COCO json, txt, classes
    match, mismatch, errors = filecmp.cmpfiles(serial, parallel, files, shallow=False)
    assert not mismatch and not errors and len(match) == len(files)
    with pytest.raises(ValueError, match='workers'):
        write_shapes(str(tmp_path / 'x'), num=2, workers=0)


# ------------------------------------------------------------------------------------------- simple: frozen

def _tree_digests(root) -> dict[str, tuple[int, str]]:
    """Per file extension: (number of files, sha256 prefix over their sorted relative paths and bytes)."""
    import hashlib
    import os
    groups: dict[str, list[str]] = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            rel = os.path.relpath(os.path.join(d, f), root)
            groups.setdefault(os.path.splitext(f)[1], []).append(rel)
    out = {}
    for ext, rels in sorted(groups.items()):
        h = hashlib.sha256()
        for rel in sorted(rels):
            h.update(rel.encode())
            with open(os.path.join(root, rel), 'rb') as f:
                h.update(f.read())
        out[ext] = (len(rels), h.hexdigest()[:16])
    return out


# Oracle: digests of the files and arrays written by the code *before* the hard style was added (commit 8fa8ec1,
# opencv-python-headless 5.0.0, numpy 2.4.6). The simple style must stay byte-identical: the quickstart's
# published numbers were measured on it. A mismatch after upgrading OpenCV or numpy (drawing, resizing, JPEG or
# random streams) is the environment changing the data, which the quickstart numbers would have to be re-measured
# for as well.
SIMPLE_FILES_QUICKSTART = {'.jpg': (12, '436dfc45d8e5f518'), '.json': (1, 'd7467ef467c0d38a'),
                           '.txt': (3, 'dc27887ad75802e5'), '.xml': (6, 'b6ab5657f6ae2a53')}
SIMPLE_FILES_SMALL_3_CLASSES = {'.jpg': (8, '151d792fba65ea5b'), '.json': (1, '0899d259aade98f2'),
                                '.txt': (3, 'edd106aac2e778c5'), '.xml': (4, 'c841c476650e6c77')}
SIMPLE_ARRAYS = 'd2caae461f3d86ba'
SIMPLE_NOISELESS_ARRAYS = 'bc1bd462bd71d40a'


def test_simple_style_is_byte_identical_to_the_pre_change_output(tmp_path):
    import hashlib

    from detkit.datasets import write_shapes
    # the quickstart's arguments (first 6 images), then non-default ones
    write_shapes(str(tmp_path / 'a'), num=6, fmt='all', seed=0, size=320, split='train')
    assert _tree_digests(tmp_path / 'a') == SIMPLE_FILES_QUICKSTART
    write_shapes(str(tmp_path / 'b'), num=4, fmt='all', seed=7, size=160, split='val', num_classes=3, max_objects=3)
    assert _tree_digests(tmp_path / 'b') == SIMPLE_FILES_SMALL_3_CLASSES
    h = hashlib.sha256()
    for s in generate_shapes(5, seed=3, size=200, split='val'):
        h.update(s.name.encode())
        h.update(s.image.tobytes())
        h.update(s.bboxes.tobytes())
        h.update(s.labels.tobytes())
    assert h.hexdigest()[:16] == SIMPLE_ARRAYS
    h = hashlib.sha256()
    for i in range(5):
        img, boxes, labels = draw_shapes_image(np.random.default_rng(i), size=128, max_objects=1, noise=False)
        h.update(img.tobytes())
        h.update(boxes.tobytes())
        h.update(labels.tobytes())
    assert h.hexdigest()[:16] == SIMPLE_NOISELESS_ARRAYS
