"""TxtDataset: x-first boxes, class indices, malformed lines and missing images."""
from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import pytest

from detkit.datasets import TxtDataset, build_dataset
from detkit.datasets.base import BAD_ANNOTATION, BAD_BOX, BAD_IMAGE, UNKNOWN_CLASS

CLASSES = ('a', 'b', 'c')


def write_txt(root, lines, sizes=None):
    os.makedirs(os.path.join(root, 'im', 'sub'), exist_ok=True)
    for name, (h, w) in (sizes or {}).items():
        cv2.imwrite(os.path.join(root, 'im', name), np.zeros((h, w, 3), np.uint8))
    with open(os.path.join(root, 'train.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return dict(type='TxtDataset', data_root=str(root), ann_file='train.txt', data_prefix=dict(img='im/'),
                classes=CLASSES)


def test_x_first_boxes_and_labels(tmp_path):
    cfg = write_txt(tmp_path, ['# comment', 'sub/p.jpg 10,2,30,8,2 0,0,5,5,0', '', 'q.jpg 1.5,2.5,3.5,4.5,1'],
                    {'sub/p.jpg': (10, 40), 'q.jpg': (20, 20)})
    ds = build_dataset(cfg)
    assert len(ds) == 2 and ds.metainfo['classes'] == CLASSES
    a = ds.get_ann_info(0)
    # x first: the 40-px-wide image holds x up to 30 without clipping
    np.testing.assert_array_equal(a['bboxes'], [[10, 2, 30, 8], [0, 0, 5, 5]])
    np.testing.assert_array_equal(a['labels'], [2, 0])
    np.testing.assert_array_equal(ds.get_ann_info(1)['bboxes'], [[1.5, 2.5, 3.5, 4.5]])
    info = ds.get_data_info(0)
    assert info['img_id'] == 'sub/p.jpg' and (info['width'], info['height']) == (40, 10)
    assert ds.summary().endswith('no bad items')


def test_image_without_boxes_is_kept_in_test_mode_only(tmp_path):
    cfg = write_txt(tmp_path, ['q.jpg', 'r.jpg 1,1,3,3,0'], {'q.jpg': (8, 8), 'r.jpg': (8, 8)})
    assert len(build_dataset(cfg)) == 1
    assert len(build_dataset(dict(cfg, test_mode=True))) == 2


def test_bad_lines_missing_images_and_bad_boxes(tmp_path, caplog):
    cfg = write_txt(tmp_path, ['ok.jpg 1,1,3,3,0', 'short.jpg 1,1,3,0', 'nan.jpg 1,x,3,3,0', 'gone.jpg 1,1,2,2,0',
                               'box.jpg 5,5,2,9,0 0,0,50,3,1'], {'ok.jpg': (8, 8), 'short.jpg': (8, 8),
                                                                 'nan.jpg': (8, 8), 'box.jpg': (10, 10)})
    with caplog.at_level(logging.WARNING, logger='detkit'):
        ds = build_dataset(cfg)
    assert len(ds) == 2
    assert ds.bad_items == {BAD_ANNOTATION: 2, BAD_IMAGE: 1, BAD_BOX: 1}
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 4
    assert any('train.txt:2' in m and 'not "x1,y1,x2,y2,cls"' in m for m in msgs)
    assert any('train.txt:3' in m and 'non-numeric' in m for m in msgs)
    assert any('gone.jpg' in m and 'not found' in m and 'train.txt:4' in m for m in msgs)
    assert any('train.txt:5' in m and 'x2 <= x1' in m and 'clipped' in m for m in msgs)
    np.testing.assert_array_equal(ds.get_ann_info(1)['bboxes'], [[0, 0, 10, 3]])


def test_class_index_out_of_range(tmp_path):
    cfg = write_txt(tmp_path, ['ok.jpg 1,1,3,3,0 1,1,4,4,3'], {'ok.jpg': (8, 8)})
    with pytest.raises(ValueError, match=r'train.txt:1: class index 3 is not in 0..2'):
        build_dataset(cfg)
    ds = build_dataset(dict(cfg, skip_unknown_classes=True))
    assert ds.bad_items[UNKNOWN_CLASS] == 1 and len(ds.get_ann_info(0)['bboxes']) == 1


def test_classes_are_required(tmp_path):
    with pytest.raises(ValueError, match='classes'):
        TxtDataset(data_root=str(tmp_path), ann_file='x.txt')


def test_a_utf8_bom_keeps_the_first_line(tmp_path):
    cfg = write_txt(tmp_path, ['p.jpg 1,1,5,5,0', 'q.jpg 2,2,6,6,1'], {'p.jpg': (10, 10), 'q.jpg': (10, 10)})
    path = os.path.join(tmp_path, 'train.txt')
    with open(path, 'rb') as f:
        text = f.read()
    with open(path, 'wb') as f:
        f.write(b'\xef\xbb\xbf' + text)
    ds = build_dataset(cfg)
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == ['p.jpg', 'q.jpg']
    assert not ds.bad_items


def test_sub_pixel_boxes_are_dropped_with_a_warning(tmp_path, caplog):
    """A box under 1 px wide or high (``10,10,10.000001,20``) is dropped and counted, like an inverted one; also
    one that clipping leaves under 1 px; a box of exactly 1 px stays."""
    cfg = write_txt(tmp_path, ['a.jpg 10,10,10.000001,20,0 4,4,9,9,1 0,5,8,5.5,2', 'b.jpg 5,5,6,6,0 -3,1,0.5,7,1'],
                    {'a.jpg': (32, 32), 'b.jpg': (16, 16)})
    with caplog.at_level(logging.WARNING, logger='detkit'):
        ds = build_dataset(cfg)
    assert ds.bad_items == {BAD_BOX: 2}
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2
    assert any('train.txt:1' in m and '2 box(es) under 1 px wide or high dropped' in m for m in msgs)
    assert any('train.txt:2' in m and 'clipped' in m and '1 under 1 px after clipping, dropped' in m for m in msgs)
    np.testing.assert_array_equal(ds.get_ann_info(0)['bboxes'], [[4, 4, 9, 9]])
    np.testing.assert_array_equal(ds.get_ann_info(0)['labels'], [1])
    np.testing.assert_array_equal(ds.get_ann_info(1)['bboxes'], [[5, 5, 6, 6]])


def test_sub_pixel_box_through_the_quickstart_pipeline_keeps_the_loss_finite(tmp_path):
    """The quickstart SSD's train pipeline (Resize to 192, a flip that once turned the box to 0 px wide) on a TXT
    set with a sub-pixel box: only the real box reaches the loss, and the loss is finite."""
    import torch

    from detkit.registry import MODELS
    from detkit.utils import load_config

    config = load_config(os.path.join(os.path.dirname(__file__), '../../configs/quickstart/ssd_shapes.py'))
    pipeline = [dict(step, prob=1.0) if step['type'] == 'RandomFlip' else step
                for step in config.train_dataloader.dataset.pipeline]
    cfg = write_txt(tmp_path, ['a.jpg 10,10,10.000001,20,0 100,100,200,200,1'], {'a.jpg': (480, 640)})
    ds = build_dataset(dict(cfg, classes=config.classes, pipeline=pipeline))
    item = ds[0]
    assert item['meta']['flip'] and item['gt_labels'].tolist() == [1]
    np.testing.assert_allclose(item['gt_bboxes'].numpy(), [[192 - 60, 40, 192 - 30, 80]], rtol=1e-6)
    torch.manual_seed(0)
    model = MODELS.build(config.model).train()
    losses = model.loss(item['inputs'][None].repeat(2, 1, 1, 1),
                        [dict(boxes=item['gt_bboxes'], labels=item['gt_labels'])] * 2)
    assert all(torch.isfinite(v) for v in losses.values()), losses
