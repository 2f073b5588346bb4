"""ConcatDataset, RepeatDataset, build_dataset, collate and the registry wiring."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from detkit.datasets import ConcatDataset, RepeatDataset, build_dataset, collate, find_dataset_attr, shapes_dataset_cfg

PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='Resize', scale=(96, 64), keep_ratio=True), dict(type='Normalize'), dict(type='PackDetInputs')]
REPO = Path(__file__).resolve().parents[2]


# run in a fresh process that imported only detkit.registry: ``-c LAZY_LOOKUP REGISTRY NAME...``
LAZY_LOOKUP = """
import sys
import detkit.registry
print('detkit.datasets' in sys.modules)
for name in sys.argv[2:]:
    cls = getattr(detkit.registry, sys.argv[1]).get(name)
    print(name, cls.__module__ if cls else None, cls.__name__ if cls else None)
"""


@pytest.mark.parametrize('registry, names', [
    ('DATASETS', ['VOCDataset', 'CocoDataset', 'TxtDataset', 'ConcatDataset', 'RepeatDataset']),
    ('TRANSFORMS', ['LoadImageFromFile', 'LoadAnnotations', 'PhotoMetricDistortion', 'Expand', 'MinIoURandomCrop',
                    'Resize', 'RandomFlip', 'Normalize', 'Pad', 'PackDetInputs'])])
def test_registry_finds_every_dataset_and_transform_lazily(registry, names):
    """Each name resolves to the class of that name in detkit.datasets, which the registry imports on first use."""
    proc = subprocess.run([sys.executable, '-c', LAZY_LOOKUP, registry, *names], capture_output=True, text=True,
                          check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    first, *lines = proc.stdout.splitlines()
    assert first == 'False'  # nothing imported the datasets before the first lookup
    found = [line.split() for line in lines]
    assert [name for name, _, _ in found] == names
    for name, module, cls_name in found:  # the class of that name, from the datasets package
        assert module.startswith('detkit.datasets.') and cls_name == name, (name, module, cls_name)


def test_concat_and_repeat(shapes_root):
    voc = shapes_dataset_cfg(shapes_root, 'voc')
    coco = shapes_dataset_cfg(shapes_root, 'coco')
    ds = build_dataset(dict(type='RepeatDataset', times=3,
                            dataset=dict(type='ConcatDataset', datasets=[dict(voc, pipeline=PIPELINE),
                                                                         dict(coco, pipeline=PIPELINE)])))
    assert isinstance(ds, RepeatDataset) and isinstance(ds.dataset, ConcatDataset)
    assert len(ds) == 3 * 24
    assert ds.metainfo['classes'] == ('circle', 'square', 'triangle', 'star')
    np.testing.assert_array_equal(ds.get_ann_info(12 + 5)['bboxes'], ds.get_ann_info(5)['bboxes'])
    np.testing.assert_array_equal(ds.get_ann_info(24 + 1)['labels'], ds.get_ann_info(1)['labels'])
    s = ds[24 + 13]
    assert s['meta']['sample_idx'] == 13 and s['meta']['img_id'] == 2  # the COCO part, image id 2
    assert ds.bad_items == {}
    assert 'RepeatDataset(x3)' in ds.summary() and 'VOCDataset' in ds.summary()
    with pytest.raises(IndexError):
        ds.dataset.get_ann_info(24)


def test_concat_requires_equal_classes(shapes_root):
    voc = shapes_dataset_cfg(shapes_root, 'voc')
    other = dict(voc, classes=('circle', 'square', 'triangle', 'star', 'moon'), skip_unknown_classes=True)
    with pytest.raises(ValueError, match='dataset 1 .* must agree'):
        ConcatDataset([voc, other])
    with pytest.raises(ValueError, match='times'):
        RepeatDataset(voc, times=0)


def test_collate_pads_and_unpacks(shapes_root):
    ds = build_dataset(dict(shapes_dataset_cfg(shapes_root, 'txt'), pipeline=PIPELINE))
    samples = [ds[0], ds[1]]
    samples[1]['inputs'] = samples[1]['inputs'][:, :50, :70]  # different sizes in one batch
    batch = collate(samples)
    images, targets, metas = batch
    assert images.shape == (2, 3, 64, 64) and images.dtype == torch.float32
    torch.testing.assert_close(images[1, :, :50, :70], samples[1]['inputs'])
    assert (images[1, :, 50:] == 0).all() and (images[1, :, :, 70:] == 0).all()
    assert batch['targets'] is targets and batch.metas is metas
    assert set(targets[0]) == {'boxes', 'labels', 'ignore_boxes'}
    torch.testing.assert_close(targets[0]['boxes'], samples[0]['gt_bboxes'])
    assert metas[0]['batch_input_shape'] == (64, 64) and metas[0]['img_shape'] == (64, 64)
    with pytest.raises(ValueError, match='empty'):
        collate([])


def test_build_dataset_passes_built_objects_and_default_args(shapes_root):
    cfg = shapes_dataset_cfg(shapes_root, 'voc')
    ds = build_dataset(cfg, default_args=dict(test_mode=True))
    assert ds.test_mode and build_dataset(ds) is ds
    with pytest.raises(KeyError, match="Did you mean 'VOCDataset'"):
        build_dataset(dict(type='VocDataset'))


def test_find_dataset_attr_looks_through_wrappers():
    class Leaf:
        def summary(self):
            return 'ok'

    class Repeat:
        def __init__(self, dataset):
            self.dataset = dataset

    class Concat:
        def __init__(self, datasets):
            self.datasets = datasets

    a, b = Leaf(), Leaf()
    assert find_dataset_attr(Repeat(Concat([a, Repeat(b), object()])), 'summary') == [a, b]
    assert find_dataset_attr(Repeat(object()), 'summary') == []
