"""VOCDataset: coordinates, difficult boxes, class subsets, unknown classes and malformed files."""
from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import pytest

from detkit.datasets import VOC_CLASSES, VOCDataset, build_dataset
from detkit.datasets.base import BAD_ANNOTATION, BAD_BOX, BAD_IMAGE, UNKNOWN_CLASS

PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackDetInputs')]


def obj(name, box, difficult=0):
    xmin, ymin, xmax, ymax = box
    return (f'<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin>'
            f'<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>')


def write_voc(root, items, size=(60, 80), write_images=True):
    """items: {img_id: xml body (objects) or raw text starting with '!' written verbatim}."""
    h, w = size
    for d in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
        os.makedirs(os.path.join(root, 'VOC2007', d), exist_ok=True)
    for img_id, body in items.items():
        xml = body[1:] if body.startswith('!') else (
            f'<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{body}</annotation>')
        with open(os.path.join(root, 'VOC2007', 'Annotations', f'{img_id}.xml'), 'w') as f:
            f.write(xml)
        if write_images:
            cv2.imwrite(os.path.join(root, 'VOC2007', 'JPEGImages', f'{img_id}.jpg'), np.full((h, w, 3), 90, np.uint8))
    with open(os.path.join(root, 'VOC2007', 'ImageSets', 'Main', 'trainval.txt'), 'w') as f:
        f.write('\n'.join(items) + '\n')
    return dict(type='VOCDataset', data_root=str(root), ann_file='VOC2007/ImageSets/Main/trainval.txt',
                data_prefix=dict(sub_data_root='VOC2007/'), pipeline=PIPELINE)


def test_one_based_coordinates_difficult_and_packing(tmp_path):
    cfg = write_voc(tmp_path, {'000001': obj('dog', (1, 1, 80, 60)) + obj('cat', (11, 21, 30, 40), difficult=1)
                               + obj('person', (5, 6, 7, 8))})
    ds = build_dataset(cfg)
    assert ds.metainfo['classes'] == VOC_CLASSES and len(ds) == 1
    ann = ds.get_ann_info(0)
    # xmin=1..xmax=W covers the whole image: (0, 0, W, H) in continuous coordinates
    np.testing.assert_array_equal(ann['bboxes'], [[0, 0, 80, 60], [4, 5, 7, 8]])
    np.testing.assert_array_equal(ann['labels'], [VOC_CLASSES.index('dog'), VOC_CLASSES.index('person')])
    np.testing.assert_array_equal(ann['bboxes_ignore'], [[10, 20, 30, 40]])
    np.testing.assert_array_equal(ann['labels_ignore'], [VOC_CLASSES.index('cat')])
    sample = ds[0]
    assert sample['inputs'].shape == (3, 60, 80)
    assert sample['gt_bboxes'].tolist() == [[0, 0, 80, 60], [4, 5, 7, 8]]
    assert sample['gt_bboxes_ignore'].tolist() == [[10, 20, 30, 40]]
    assert sample['meta']['img_id'] == '000001' and sample['meta']['sample_idx'] == 0
    assert ds.summary().endswith('no bad items')


def test_class_subset_and_filter_empty(tmp_path):
    cfg = write_voc(tmp_path, {'a': obj('dog', (1, 1, 10, 10)) + obj('cat', (2, 2, 20, 20)),
                               'b': obj('car', (1, 1, 10, 10))})
    ds = build_dataset(dict(cfg, classes=('cat', 'dog')))
    assert ds.metainfo['classes'] == ('cat', 'dog')
    assert len(ds) == 1  # 'b' has no cat/dog: dropped in training
    np.testing.assert_array_equal(ds.get_ann_info(0)['labels'], [1, 0])
    test_ds = build_dataset(dict(cfg, classes=('cat', 'dog'), test_mode=True))
    assert len(test_ds) == 2 and len(test_ds.get_ann_info(1)['bboxes']) == 0
    kept = build_dataset(dict(cfg, classes=('cat', 'dog'), filter_empty_gt=False))
    assert len(kept) == 2


def test_unknown_class_is_an_error_naming_class_and_file(tmp_path):
    cfg = write_voc(tmp_path, {'x1': obj('dog', (1, 1, 10, 10)) + obj('unicorn', (1, 1, 5, 5))})
    with pytest.raises(ValueError, match=r"unknown class 'unicorn' in .*x1\.xml"):
        build_dataset(cfg)
    ds = build_dataset(dict(cfg, skip_unknown_classes=True))
    assert ds.bad_items[UNKNOWN_CLASS] == 1 and len(ds.get_ann_info(0)['bboxes']) == 1
    # a custom class list makes every other name unknown
    with pytest.raises(ValueError, match="unknown class 'dog'"):
        build_dataset(dict(cfg, classes=('unicorn',)))


def test_malformed_xml_and_bad_boxes_warn_once_and_count(tmp_path, caplog):
    cfg = write_voc(tmp_path, {
        'good': obj('dog', (1, 1, 10, 10)),
        'broken': '!<annotation><size><width>80</wid',
        'nocoord': obj('dog', (1, 1, 'abc', 10)),
        'outside': obj('dog', (50, 40, 120, 70)) + obj('cat', (20, 20, 10, 30)),
    })
    with caplog.at_level(logging.WARNING, logger='detkit'):
        ds = build_dataset(cfg)
    assert len(ds) == 2
    assert ds.bad_items[BAD_ANNOTATION] == 2 and ds.bad_items[BAD_BOX] == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert any('broken.xml' in m and 'XML parse error' in m for m in lines)
    assert any('nocoord.xml' in m and 'non-numeric' in m for m in lines)
    assert any('outside.xml' in m and 'clipped' in m and 'x2 <= x1' in m for m in lines)
    ann = ds.get_ann_info(1)
    np.testing.assert_array_equal(ann['bboxes'], [[49, 39, 80, 60]])  # clipped to the 80x60 image
    np.testing.assert_array_equal(ann['labels'], [VOC_CLASSES.index('dog')])
    assert '3 bad' in ds.summary()


def test_missing_size_reads_the_image_header(tmp_path):
    cfg = write_voc(tmp_path, {'nosize': '!<annotation>' + obj('dog', (1, 1, 200, 10)) + '</annotation>'},
                    size=(30, 40))
    ds = build_dataset(cfg)
    info = ds.get_data_info(0)
    assert (info['width'], info['height']) == (40, 30)
    np.testing.assert_array_equal(ds.get_ann_info(0)['bboxes'], [[0, 0, 40, 10]])
    os.remove(os.path.join(tmp_path, 'VOC2007', 'JPEGImages', 'nosize.jpg'))
    ds = build_dataset(cfg)
    assert len(ds) == 0 and ds.bad_items[BAD_IMAGE] == 1


def test_missing_ann_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothere.txt'):
        VOCDataset(data_root=str(tmp_path), ann_file='nothere.txt')


def test_a_utf8_bom_in_the_image_set_list_keeps_the_first_item(tmp_path):
    # editors on Windows save "UTF-8" with a byte-order mark; it must not become part of the first id
    cfg = write_voc(tmp_path, {'000001': obj('dog', (1, 1, 10, 10)), '000002': obj('cat', (1, 1, 10, 10))})
    list_file = os.path.join(tmp_path, 'VOC2007', 'ImageSets', 'Main', 'trainval.txt')
    with open(list_file, 'rb') as f:
        text = f.read()
    with open(list_file, 'wb') as f:
        f.write(b'\xef\xbb\xbf' + text)
    ds = build_dataset(cfg)
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == ['000001', '000002']
    assert not ds.bad_items
