"""Runtime bad data: an image that fails to decode in __getitem__ is warned about once, counted (also from
data-loader workers) and replaced (training) or evaluated as a placeholder (test mode)."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from detkit.datasets import build_dataset, collate, shapes_dataset_cfg, worker_init_fn
from detkit.datasets.base import BAD_IMAGE

PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='Resize', scale=(64, 64)),
            dict(type='Normalize'), dict(type='PackDetInputs')]


@pytest.fixture()
def broken_voc(shapes_root, tmp_path):
    """The shapes VOC dataset with image 2 replaced by garbage bytes and image 3 deleted (in a copy)."""
    root = tmp_path / 'voc'
    for d in ('JPEGImages', 'Annotations', 'ImageSets/Main'):
        os.makedirs(root / d)
    for sub in ('Annotations', 'ImageSets/Main'):
        for name in os.listdir(os.path.join(shapes_root, sub)):
            os.symlink(os.path.join(shapes_root, sub, name), root / sub / name)
    for i, name in enumerate(sorted(os.listdir(os.path.join(shapes_root, 'JPEGImages')))):
        if i == 2:
            (root / 'JPEGImages' / name).write_bytes(b'\xff\xd8 not really a jpeg')
        elif i != 3:
            os.symlink(os.path.join(shapes_root, 'JPEGImages', name), root / 'JPEGImages' / name)
    return dict(shapes_dataset_cfg(str(root), 'voc'), pipeline=PIPELINE)


def test_unreadable_images_are_replaced_in_training(broken_voc, caplog):
    ds = build_dataset(broken_voc)
    assert len(ds) == 12 and not ds.bad_items  # headers are not read for VOC: found when loading
    with caplog.at_level(logging.WARNING, logger='detkit'):
        s2 = ds[2]
        s2_again = ds[2]
        s3 = ds[3]
    assert s2['meta']['sample_idx'] == 4 and s2_again['meta']['sample_idx'] == 4 and s3['meta']['sample_idx'] == 4
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2  # one line per bad file, not per access
    assert any('train_000002.jpg' in m and 'not a decodable image' in m for m in msgs)
    assert any('train_000003.jpg' in m and 'file not found' in m for m in msgs)
    assert ds.bad_items == {BAD_IMAGE: 2}
    assert '2 unreadable image' in ds.summary()


def test_unreadable_image_is_a_placeholder_in_test_mode(broken_voc):
    ds = build_dataset(dict(broken_voc, test_mode=True))
    s = ds[2]
    assert s['meta']['sample_idx'] == 2 and s['meta']['ori_shape'] == (160, 160)
    assert s['inputs'].shape == (3, 64, 64)
    assert len(s['gt_bboxes']) == len(ds.get_ann_info(2)['bboxes'])  # its ground truth still counts
    assert ds.bad_items == {BAD_IMAGE: 1}


def test_counts_from_data_loader_workers_reach_the_dataset(broken_voc):
    ds = build_dataset(broken_voc)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate,
                                         worker_init_fn=worker_init_fn)
    batches = list(loader)
    assert sum(len(b.metas) for b in batches) == 12
    assert ds.bad_items == {BAD_IMAGE: 2}


def test_too_many_consecutive_failures_raise(tmp_path):
    (tmp_path / 'l.txt').write_text('a.jpg 1,1,3,3,0\n')
    from detkit.datasets import TxtDataset
    from PIL import Image
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'a.jpg')
    ds = TxtDataset(data_root=str(tmp_path), ann_file='l.txt', classes=('x',), pipeline=PIPELINE, max_refetch=3)
    (tmp_path / 'a.jpg').write_bytes(b'')
    with pytest.raises(RuntimeError, match='could not be loaded'):
        ds[0]


def test_a_truncated_jpeg_is_warned_about_once_with_its_path_and_counted(tmp_path, caplog, capfd):
    from detkit.datasets import TxtDataset
    from PIL import Image
    rng = np.random.RandomState(0)
    for name in ('a.jpg', 'b.jpg'):
        Image.fromarray(rng.randint(0, 256, (32, 32, 3)).astype(np.uint8)).save(tmp_path / name, quality=95)
    data = (tmp_path / 'a.jpg').read_bytes()
    (tmp_path / 'a.jpg').write_bytes(data[:len(data) // 2])
    (tmp_path / 'l.txt').write_text('a.jpg 1,1,9,9,0\nb.jpg 2,2,9,9,0\n')
    ds = TxtDataset(data_root=str(tmp_path), ann_file='l.txt', classes=('x',), pipeline=PIPELINE)
    with caplog.at_level(logging.WARNING, logger='detkit'):
        for _ in range(2):  # two epochs
            assert ds[0]['meta']['img_path'].endswith('b.jpg')
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and 'a.jpg' in msgs[0] and 'truncated JPEG' in msgs[0]
    assert ds.bad_items == {BAD_IMAGE: 1}
    assert 'Premature end' not in capfd.readouterr().err


@pytest.mark.parametrize('fmt', ['voc', 'coco', 'txt'])
def test_mmdetection_3_metainfo_and_backend_args_mean_the_same(shapes_root, fmt):
    """``metainfo=dict(classes=...)`` is ``classes=...``; ``backend_args=None`` (local files) is accepted."""
    cfg = shapes_dataset_cfg(shapes_root, fmt)
    classes = tuple(reversed(cfg.pop('classes')))  # another order: labels must follow it
    plain = build_dataset(dict(cfg, classes=classes))
    palette = [(i, 2, 3) for i in range(len(classes))]
    mm3 = build_dataset(dict(cfg, metainfo=dict(classes=list(classes), palette=palette),
                             backend_args=None))
    assert mm3.metainfo['classes'] == plain.metainfo['classes'] == classes
    assert mm3.metainfo['palette'] == palette
    assert len(mm3) == len(plain) > 0
    for i in range(len(plain)):
        assert np.array_equal(mm3.get_ann_info(i)['labels'], plain.get_ann_info(i)['labels'])
        assert np.array_equal(mm3.get_ann_info(i)['bboxes'], plain.get_ann_info(i)['bboxes'])
    assert build_dataset(dict(cfg, classes=classes, metainfo=dict(classes=classes))).metainfo['classes'] == classes


@pytest.mark.parametrize('extra,match', [
    (dict(classes=('circle',), metainfo=dict(classes=('square',))),
     r"VOCDataset: classes=\('circle',\) and metainfo\['classes'\]=\('square',\) differ"),
    (dict(metainfo=dict(clases=('circle',))), r"VOCDataset: metainfo key 'clases' is not read.*did you mean 'classes'"),
    (dict(metainfo=('circle',)), r"VOCDataset: metainfo must be a dict such as dict\(classes=\(...\)\)"),
    (dict(backend_args=dict(backend='petrel')), r"VOCDataset: backend_args=\{'backend': 'petrel'\} is not supported"),
])
def test_metainfo_and_backend_args_that_mean_something_else_are_refused(shapes_root, extra, match):
    cfg = shapes_dataset_cfg(shapes_root, 'voc')
    cfg.pop('classes')
    with pytest.raises((ValueError, TypeError), match=match):
        build_dataset(dict(cfg, **extra))
