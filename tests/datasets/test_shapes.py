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
    # the quickstart's arguments (first 6 images), then non-default ones; style left out and given explicitly
    write_shapes(str(tmp_path / 'a'), num=6, fmt='all', seed=0, size=320, split='train')
    assert _tree_digests(tmp_path / 'a') == SIMPLE_FILES_QUICKSTART
    write_shapes(str(tmp_path / 'b'), num=4, fmt='all', seed=7, size=160, split='val', num_classes=3, max_objects=3,
                 style='simple')
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


# ------------------------------------------------------------------------------------------------ hard style

def test_styles_name_their_classes_and_validate():
    from detkit.datasets import HARD_SHAPE_CLASSES, STYLE_CLASSES
    assert STYLE_CLASSES == {'simple': ('circle', 'square', 'triangle', 'star'),
                             'hard': ('ellipse', 'cross', 'ring', 'heart')}
    assert HARD_SHAPE_CLASSES == STYLE_CLASSES['hard'] and SHAPE_CLASSES == STYLE_CLASSES['simple']
    for fmt in ('voc', 'coco', 'txt'):
        assert shapes_dataset_cfg('x', fmt, style='hard')['classes'] == HARD_SHAPE_CLASSES
        assert shapes_dataset_cfg('x', fmt, style='hard', num_classes=3)['classes'] == HARD_SHAPE_CLASSES[:3]
        assert shapes_dataset_cfg('x', fmt)['classes'] == SHAPE_CLASSES
    with pytest.raises(ValueError, match='style'):
        shapes_dataset_cfg('x', 'voc', style='medium')
    with pytest.raises(ValueError, match='style'):
        next(generate_shapes(1, style='medium'))
    with pytest.raises(ValueError, match='num_classes'):
        next(generate_shapes(1, num_classes=5, style='hard'))
    with pytest.raises(ValueError, match='size'):
        next(generate_shapes(1, size=48, style='hard'))


def test_hard_three_formats_load_identical_boxes_and_real_image_sizes(tmp_path):
    """Non-square images: VOC <size>, COCO width/height and the decoded JPEG all give the image's own shape."""
    from detkit.datasets import HARD_SHAPE_CLASSES, write_shapes
    info = write_shapes(str(tmp_path), num=10, fmt='all', seed=5, size=128, split='val', style='hard')
    assert info['classes'] == HARD_SHAPE_CLASSES
    assert (tmp_path / 'classes.txt').read_text().split() == list(HARD_SHAPE_CLASSES)
    datasets = {fmt: build_dataset(cfg) for fmt, cfg in info['configs'].items()}
    samples = list(generate_shapes(10, seed=5, size=128, split='val', style='hard'))
    assert len({s.image.shape for s in samples}) > 5  # the shapes differ, so a size mix-up would show
    for fmt, ds in datasets.items():
        assert len(ds) == 10, fmt
        assert ds.metainfo['classes'] == HARD_SHAPE_CLASSES
    for i, s in enumerate(samples):
        h, w = s.image.shape[:2]
        for fmt, ds in datasets.items():
            info_i = ds.get_data_info(i)
            assert (info_i['height'], info_i['width']) == (h, w), fmt
            assert cv2.imread(info_i['img_path']).shape == (h, w, 3), fmt
            ann = ds.get_ann_info(i)
            np.testing.assert_array_equal(ann['bboxes'], s.bboxes, err_msg=fmt)
            np.testing.assert_array_equal(ann['labels'], s.labels, err_msg=fmt)


def test_hard_same_seed_same_data_other_seed_split_or_style_differs():
    a = list(generate_shapes(3, seed=1, size=96, style='hard'))
    b = list(generate_shapes(3, seed=1, size=96, style='hard'))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.bboxes, y.bboxes)
    np.testing.assert_array_equal(list(generate_shapes(1, seed=1, size=96, style='hard'))[0].image, a[0].image)
    for other in (generate_shapes(1, seed=2, size=96, style='hard'),
                  generate_shapes(1, seed=1, size=96, split='val', style='hard')):
        assert not np.array_equal(next(other).image, a[0].image)
    assert next(generate_shapes(1, seed=1, size=96)).image.shape == (96, 96, 3)  # the simple style: square


def test_hard_worker_processes_write_the_same_files(tmp_path):
    import filecmp
    import os

    from detkit.datasets import write_shapes
    serial, parallel = tmp_path / 'serial', tmp_path / 'parallel'
    write_shapes(str(serial), num=110, fmt='all', seed=4, size=64, split='train', workers=1, style='hard')
    write_shapes(str(parallel), num=110, fmt='all', seed=4, size=64, split='train', workers=2, style='hard')
    files = sorted(os.path.relpath(os.path.join(d, f), serial) for d, _, fs in os.walk(serial) for f in fs)
    assert len(files) == 110 * 3 + 4
    match, mismatch, errors = filecmp.cmpfiles(serial, parallel, files, shallow=False)
    assert not mismatch and not errors and len(match) == len(files)


def _colour_rect(img: np.ndarray, colour: np.ndarray, box: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """Bounding rectangle (x, y, w, h) of the pixels of exactly ``colour`` in ``box`` grown by ``margin``."""
    x1, y1, x2, y2 = box.astype(int)
    mask = (img == colour).all(axis=2).astype(np.uint8)
    keep = np.zeros_like(mask)
    keep[max(0, y1 - margin):y2 + margin, max(0, x1 - margin):x2 + margin] = 1
    return tuple(cv2.boundingRect(mask * keep))


def test_hard_boxes_are_tight_around_the_visible_pixels():
    """Without noise each object is one flat colour: the box must be the rectangle of that colour's pixels.

    The colour is found from the image alone: among the colours filling most of the box, one must reach all four
    box edges and have no pixel in a 6 px band outside the box (so the box is neither too big nor too small).
    Occluded objects are included (up to 5 per image).
    """
    checked = 0
    for i in range(30):
        img, boxes, labels = draw_shapes_image(np.random.default_rng(100 + i), size=160, max_objects=5, noise=False,
                                               style='hard')
        assert len(boxes) == len(labels) >= 1
        for box in boxes:
            x1, y1, x2, y2 = box.astype(int)
            assert 0 <= x1 < x2 <= img.shape[1] and 0 <= y1 < y2 <= img.shape[0]
            colours, counts = np.unique(img[y1:y2, x1:x2].reshape(-1, 3), axis=0, return_counts=True)
            candidates = colours[np.argsort(-counts)[:3]]
            rects = [_colour_rect(img, c, box, margin=6) for c in candidates]
            assert (x1, y1, x2 - x1, y2 - y1) in rects, (i, box, rects)
            checked += 1
    assert checked > 60


def test_hard_image_sizes_aspect_ratios_and_object_extents_vary_within_bounds():
    """Measured on generated images at the default size: sides 224..480, width/height 0.6..1.7, and a lone
    (unoccluded) object's box has its longer side at 10%..45% of the short side."""
    samples = list(generate_shapes(60, seed=3, size=320, split='train', style='hard'))
    hw = np.array([s.image.shape[:2] for s in samples])
    aspect = hw[:, 1] / hw[:, 0]
    assert hw.min() >= 224 and hw.max() <= 480
    assert aspect.min() >= 0.6 and aspect.max() <= 1.7
    assert aspect.min() < 0.75 and aspect.max() > 1.35  # both portrait and landscape, not only near-squares
    assert len({tuple(x) for x in hw}) > 50
    short = hw.min(axis=1)
    counts = [len(s.bboxes) for s in samples]
    assert 1 <= min(counts) and max(counts) <= 5 and np.mean(counts) >= 2
    assert set(np.concatenate([s.labels for s in samples]).tolist()) == {0, 1, 2, 3}
    for s, sh in zip(samples, short):
        wh = s.bboxes[:, 2:] - s.bboxes[:, :2]
        assert (wh.max(axis=1) <= 0.45 * sh).all()  # occlusion only shrinks a box
        assert wh.min() >= 10  # no tiny objects at the default size
    extents = []
    for i in range(60):
        img, boxes, _ = draw_shapes_image(np.random.default_rng(i), size=320, max_objects=1, style='hard')
        extents.append((boxes[0, 2:] - boxes[0, :2]).max() / min(img.shape[:2]))
    extents = np.array(extents)
    assert extents.min() >= 0.10 and extents.max() <= 0.45
    assert extents.min() < 0.17 and extents.max() > 0.40  # the whole range is used


def test_hard_backgrounds_are_more_cluttered_than_simple():
    """Edge density outside the object boxes (noise off): textures, patches and strokes give several times the
    simple style's."""
    def clutter(style: str) -> float:
        densities = []
        for i in range(12):
            img, boxes, _ = draw_shapes_image(np.random.default_rng(i), size=160, noise=False, style=style)
            edges = cv2.Canny(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), 50, 150) > 0
            outside = np.ones(edges.shape, bool)
            for x1, y1, x2, y2 in boxes.astype(int):
                outside[y1:y2, x1:x2] = False
            densities.append(edges[outside].mean())
        return float(np.mean(densities))
    assert clutter('hard') > 2 * clutter('simple')
