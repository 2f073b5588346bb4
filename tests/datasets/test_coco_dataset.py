"""CocoDataset: non-contiguous category ids, crowd regions, filtering, subsets and malformed entries."""
from __future__ import annotations

import json
import logging
import os

import cv2
import numpy as np
import pytest

from detkit.datasets import CocoDataset, build_dataset
from detkit.datasets.base import BAD_ANNOTATION, BAD_BOX

CATS = [dict(id=7, name='zebra'), dict(id=2, name='bike'), dict(id=40, name='cup')]


def write_coco(root, images, anns, cats=CATS):
    os.makedirs(os.path.join(root, 'imgs'), exist_ok=True)
    for img in images:
        cv2.imwrite(os.path.join(root, 'imgs', img['file_name']), np.zeros((img['height'], img['width'], 3),
                                                                            np.uint8))
    with open(os.path.join(root, 'ann.json'), 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=cats), f)
    return dict(type='CocoDataset', data_root=str(root), ann_file='ann.json', data_prefix=dict(img='imgs/'),
                pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackDetInputs')])


def ann(i, img, cat, bbox, **kw):
    return dict(id=i, image_id=img, category_id=cat, bbox=bbox, area=bbox[2] * bbox[3], **kw)


IMAGES = [dict(id=11, file_name='a.jpg', width=50, height=40), dict(id=5, file_name='b.jpg', width=30, height=30),
          dict(id=8, file_name='c.jpg', width=30, height=30)]
ANNS = [ann(1, 11, 40, [1, 2, 10, 20]), ann(2, 11, 2, [5, 5, 4, 4]), ann(3, 11, 7, [0, 0, 50, 40], iscrowd=1),
        ann(4, 5, 7, [3, 3, 3, 3]), ann(5, 5, 2, [0, 0, 2, 2], ignore=1)]


def test_category_mapping_crowd_and_boxes(tmp_path):
    ds = build_dataset(write_coco(tmp_path, IMAGES, ANNS))
    # default classes: categories sorted by id
    assert ds.metainfo['classes'] == ('bike', 'zebra', 'cup')
    assert ds.cat_ids == [2, 7, 40] and ds.label2cat == {0: 2, 1: 7, 2: 40}
    assert ds.cat2label == {2: 0, 7: 1, 40: 2} and ds.metainfo['cat_ids'] == (2, 7, 40)
    assert len(ds) == 2  # image 8 has no boxes: dropped in training
    a = ds.get_ann_info(0)
    np.testing.assert_array_equal(a['bboxes'], [[1, 2, 11, 22], [5, 5, 9, 9]])
    np.testing.assert_array_equal(a['labels'], [2, 0])
    np.testing.assert_array_equal(a['bboxes_ignore'], [[0, 0, 50, 40]])
    np.testing.assert_array_equal(a['labels_ignore'], [1])
    b = ds.get_ann_info(1)  # the 'ignore: 1' annotation is skipped
    np.testing.assert_array_equal(b['labels'], [1])
    assert ds.get_data_info(0)['img_id'] == 11
    sample = ds[0]
    assert sample['gt_bboxes_ignore'].tolist() == [[0, 0, 50, 40]] and sample['meta']['img_id'] == 11


def test_test_mode_keeps_empty_images_and_order(tmp_path):
    ds = build_dataset(dict(write_coco(tmp_path, IMAGES, ANNS), test_mode=True))
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == [11, 5, 8]


def test_class_subset_in_given_order(tmp_path):
    ds = build_dataset(dict(write_coco(tmp_path, IMAGES, ANNS), classes=('cup', 'zebra')))
    assert ds.cat_ids == [40, 7]
    assert len(ds) == 2
    np.testing.assert_array_equal(ds.get_ann_info(0)['labels'], [0])  # the cup; the bike is dropped
    np.testing.assert_array_equal(ds.get_ann_info(0)['labels_ignore'], [1])
    with pytest.raises(ValueError, match=r"\['horse'\] are not categories"):
        build_dataset(dict(write_coco(tmp_path, IMAGES, ANNS), classes=('cup', 'horse')))


def test_malformed_json_names_the_file(tmp_path):
    (tmp_path / 'bad.json').write_text('{"images": [')
    with pytest.raises(ValueError, match='bad.json: not valid JSON'):
        CocoDataset(data_root=str(tmp_path), ann_file='bad.json')
    (tmp_path / 'nocat.json').write_text('{"images": []}')
    with pytest.raises(ValueError, match='nocat.json.*categories'):
        CocoDataset(data_root=str(tmp_path), ann_file='nocat.json')


def test_malformed_entries_and_bad_boxes_warn_and_count(tmp_path, caplog):
    anns = [ann(1, 11, 40, [1, 2, 10, 20]), dict(id=2, image_id=5, category_id=7, bbox=[1, 2, 'x', 4]),
            ann(3, 8, 7, [20, 20, 30, 30]), ann(4, 8, 2, [5, 5, -3, 4])]
    with caplog.at_level(logging.WARNING, logger='detkit'):
        ds = build_dataset(write_coco(tmp_path, IMAGES, anns))
    assert ds.bad_items[BAD_ANNOTATION] == 1 and ds.bad_items[BAD_BOX] == 1
    assert len(ds) == 2
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2
    assert any('[b.jpg]' in m and 'malformed bbox' in m for m in msgs)
    assert any('[c.jpg]' in m and 'clipped' in m and 'x2 <= x1' in m for m in msgs)
    np.testing.assert_array_equal(ds.get_ann_info(1)['bboxes'], [[20, 20, 30, 30]])
