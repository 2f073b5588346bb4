"""CocoDataset: non-contiguous category ids, crowd regions, filtering, subsets and malformed entries."""
from __future__ import annotations

import json
import logging
import os

import cv2
import numpy as np
import pytest

from detkit.datasets import CocoDataset, build_dataset
from detkit.datasets.base import BAD_ANNOTATION, BAD_BOX, ORPHAN_ANNOTATION, UNKNOWN_CLASS

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


def test_duplicate_image_ids_are_an_error_naming_file_and_id(tmp_path):
    # annotations point at images by id: with two entries for id 5 their boxes cannot be told apart
    images = IMAGES + [dict(id=5, file_name='d.jpg', width=30, height=30)]
    anns = ANNS + [ann(6, 5, 40, [10, 10, 5, 5])]
    with pytest.raises(ValueError, match=r"ann\.json: image id 5 is used by 2 entries \('b\.jpg', 'd\.jpg'\)"):
        build_dataset(write_coco(tmp_path, images, anns))


def test_duplicate_category_ids_are_an_error(tmp_path):
    cats = [dict(id=1, name='circle'), dict(id=1, name='circle2'), dict(id=3, name='star')]
    images = [dict(id=1, file_name='a.jpg', width=50, height=40)]
    with pytest.raises(ValueError, match=r"ann\.json: category id 1 is used by 2 categories \('circle', 'circle2'\)"):
        build_dataset(write_coco(tmp_path, images, [ann(1, 1, 1, [1, 2, 10, 20])], cats=cats))


def test_annotations_of_unknown_images_or_categories_warn_once_and_count(tmp_path, caplog):
    anns = ANNS + [ann(6, 99, 7, [1, 1, 5, 5]), ann(7, 98, 7, [1, 1, 5, 5]),  # no such images
                   ann(8, 11, 123, [1, 1, 5, 5]), ann(9, 5, 124, [2, 2, 5, 5])]  # no such categories
    with caplog.at_level(logging.WARNING, logger='detkit'):
        ds = build_dataset(write_coco(tmp_path, IMAGES, anns))
    assert ds.bad_items[ORPHAN_ANNOTATION] == 2 and ds.bad_items[UNKNOWN_CLASS] == 2
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2
    assert any('ann.json' in m and '2 annotation(s)' in m and '[98, 99]' in m for m in msgs), msgs
    assert any('ann.json' in m and '2 annotation(s)' in m and '[123, 124]' in m for m in msgs), msgs
    # the known boxes are unchanged
    np.testing.assert_array_equal(ds.get_ann_info(0)['labels'], [2, 0])
    np.testing.assert_array_equal(ds.get_ann_info(1)['labels'], [1])
    # a class subset drops the other categories on purpose: not a problem, nothing reported
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='detkit'):
        sub = build_dataset(dict(write_coco(tmp_path, IMAGES, ANNS), classes=('cup',)))
    assert not sub.bad_items and not caplog.records


def test_string_width_and_height_are_read_as_numbers_or_reported(tmp_path, caplog):
    images = [dict(id=11, file_name='a.jpg', width='50', height='40'),
              dict(id=5, file_name='b.jpg', width='wide', height=30)]
    anns = [ann(1, 11, 40, [1, 2, 100, 20]), ann(2, 5, 7, [3, 3, 3, 3])]
    path = write_coco(tmp_path, [dict(im, width=50, height=40) for im in images], [])  # writes the image files
    with open(os.path.join(tmp_path, 'ann.json'), 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=CATS), f)
    with caplog.at_level(logging.WARNING, logger='detkit'):
        ds = build_dataset(path)
    assert len(ds) == 1 and ds.get_data_info(0)['width'] == 50 and ds.get_data_info(0)['height'] == 40
    np.testing.assert_array_equal(ds.get_ann_info(0)['bboxes'], [[1, 2, 50, 22]])  # clipped to the 50 px width
    assert ds.bad_items[BAD_ANNOTATION] == 1
    assert any('[b.jpg]' in r.getMessage() and "width 'wide'" in r.getMessage() for r in caplog.records)


def test_empty_categories_fail_at_build_time(tmp_path):
    images = [dict(id=1, file_name='a.jpg', width=50, height=40)]
    with pytest.raises(ValueError, match=r'ann\.json.*"categories" list is empty'):
        build_dataset(write_coco(tmp_path, images, [], cats=[]))


def test_sub_pixel_boxes_are_dropped_with_a_warning(tmp_path, caplog):
    """COCO's ``[x, y, w, h]`` with ``w`` or ``h`` under 1 px goes (as in mmdetection), crowd regions too; 1 px
    stays."""
    anns = [ann(1, 11, 40, [1, 2, 0.5, 20]), ann(2, 11, 2, [5, 5, 4, 1]), ann(3, 11, 7, [0, 0, 50, 1e-6], iscrowd=1),
            ann(4, 5, 7, [3, 3, 3, 3])]
    with caplog.at_level(logging.WARNING, logger='detkit'):
        ds = build_dataset(write_coco(tmp_path, IMAGES, anns))
    assert ds.bad_items == {BAD_BOX: 1}
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and '[a.jpg]' in msgs[0] and '2 box(es) under 1 px wide or high dropped' in msgs[0]
    a = ds.get_ann_info(0)
    np.testing.assert_array_equal(a['bboxes'], [[5, 5, 9, 6]])
    assert a['labels'].tolist() == [0] and a['bboxes_ignore'].shape == (0, 4)
