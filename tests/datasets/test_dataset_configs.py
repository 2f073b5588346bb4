"""The base dataset configs build and run on small synthetic stand-ins of VOC07+12, COCO and shapes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detkit.datasets import build_dataset, collate, write_shapes
from detkit.engine import build_dataloader, build_evaluator, evaluate, select_main_metric
from detkit.utils.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / '_base_' / 'datasets'


def fake_vocdevkit(root: Path) -> None:
    rng = np.random.default_rng(0)
    for year in ('VOC2007', 'VOC2012'):
        for d in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
            os.makedirs(root / year / d, exist_ok=True)
        ids = [f'{year}_{i}' for i in range(3)]
        for img_id in ids:
            cv2.imwrite(str(root / year / 'JPEGImages' / f'{img_id}.jpg'),
                        rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
            (root / year / 'Annotations' / f'{img_id}.xml').write_text(
                '<annotation><size><width>160</width><height>120</height></size><object><name>dog</name>'
                '<difficult>0</difficult><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>90</xmax><ymax>100</ymax>'
                '</bndbox></object></annotation>')
        for split in ('trainval', 'test'):
            (root / year / 'ImageSets' / 'Main' / f'{split}.txt').write_text('\n'.join(ids) + '\n')


def fake_coco(root: Path) -> None:
    for split in ('train2017', 'val2017'):
        os.makedirs(root / split, exist_ok=True)
        cv2.imwrite(str(root / split / '1.jpg'), np.zeros((100, 140, 3), np.uint8))
    os.makedirs(root / 'annotations', exist_ok=True)
    data = dict(images=[dict(id=1, file_name='1.jpg', width=140, height=100)],
                annotations=[dict(id=1, image_id=1, category_id=18, bbox=[10, 10, 50, 40], area=2000, iscrowd=0)],
                categories=[dict(id=1, name='person'), dict(id=18, name='dog')])
    for split in ('train2017', 'val2017'):
        (root / 'annotations' / f'instances_{split}.json').write_text(json.dumps(data))


def set_root(ds_cfg, data_root: str) -> None:
    """Point every leaf dataset config (through Repeat/Concat wrappers) at ``data_root``."""
    if 'dataset' in ds_cfg:
        set_root(ds_cfg['dataset'], data_root)
    for part in ds_cfg.get('datasets', []):
        set_root(part, data_root)
    if 'ann_file' in ds_cfg:
        ds_cfg['data_root'] = data_root


class GroundTruthOracle(torch.nn.Module):
    """A "detector" whose predictions are each image's ground truth (original-image pixels), score 1; it is asked
    for the images of an evaluation loader, which go in dataset order."""

    def __init__(self, dataset) -> None:
        super().__init__()
        self.dataset = dataset
        self.next_index = 0

    def predict(self, images, metas, rescale=True):
        indices = range(self.next_index, self.next_index + len(metas))
        self.next_index += len(metas)
        anns = [self.dataset.get_ann_info(i) for i in indices]
        return [dict(boxes=torch.from_numpy(a['bboxes']), scores=torch.ones(len(a['labels'])),
                     labels=torch.from_numpy(a['labels'])) for a in anns]


def check(cfg, data_root: str) -> None:
    for key in ('train_dataloader', 'val_dataloader'):
        ds_cfg = cfg[key]['dataset']
        set_root(ds_cfg, data_root)
        ds = build_dataset(ds_cfg)
        batch = collate([ds[0], ds[len(ds) - 1]])
        assert batch.images.ndim == 4 and batch.images.dtype == torch.float32
        for t, m in zip(batch.targets, batch.metas):
            h, w = m['img_shape']
            b = t['boxes']
            assert len(b) == len(t['labels']) and ((b[:, 2] <= w) & (b[:, 3] <= h)).all()
    # the val evaluator fits the val dataset: the evaluation loop scores its ground truth as perfect (a metric
    # reading another annotation file, or mapping labels to other categories, would score less)
    metric_cfg = dict(cfg['val_evaluator'])
    if 'ann_file' in metric_cfg:
        metric_cfg['ann_file'] = os.path.join(data_root, 'annotations/instances_val2017.json')
    loader = build_dataloader(dict(cfg['val_dataloader'], num_workers=0, persistent_workers=False), train=False,
                              dataset=ds)
    metrics = evaluate(GroundTruthOracle(ds), loader, build_evaluator(metric_cfg), torch.device('cpu')).metrics
    assert metrics[select_main_metric(metrics)] == pytest.approx(1.0), metrics


def test_voc0712_config(tmp_path):
    fake_vocdevkit(tmp_path)
    cfg = load_config(CONFIGS / 'voc0712.py')
    check(cfg, str(tmp_path))
    assert len(build_dataset(cfg['train_dataloader']['dataset'])) == 3 * 6


def test_coco_config(tmp_path):
    fake_coco(tmp_path)
    check(load_config(CONFIGS / 'coco_detection.py'), str(tmp_path))


def test_shapes_config(tmp_path):
    write_shapes(str(tmp_path), num=3, fmt='voc', seed=0, size=96, split='train')
    write_shapes(str(tmp_path), num=2, fmt='voc', seed=0, size=96, split='val')
    check(load_config(CONFIGS / 'shapes_voc.py'), str(tmp_path))
