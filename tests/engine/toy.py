"""Test-only fakes that keep the contracts of docs/conventions.md: a tiny detector, a dataset of coloured
rectangles, three pipeline transforms and a metric. Registered under ``Toy*`` names so they cannot clash with the
real parts; imported by the engine/apis/tools tests (and by tool subprocesses through ``custom_imports``).
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from torch import nn

from detkit.registry import DATASETS, METRICS, MODELS, TRANSFORMS

CLASSES = ('red_box', 'green_box')
COLORS_BGR = ((0, 0, 230), (0, 200, 0))
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]


def make_item(idx: int, seed: int = 0, size: tuple[int, int] = (80, 60)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A deterministic image (BGR uint8, ``size`` = (w, h)) with one or two filled rectangles and their boxes."""
    rng = np.random.RandomState(seed * 1000 + idx)
    w, h = size
    img = np.full((h, w, 3), 90, np.uint8)
    boxes, labels = [], []
    for _ in range(1 + idx % 2):
        bw, bh = rng.randint(14, 26), rng.randint(14, 26)
        x1, y1 = rng.randint(0, w - bw), rng.randint(0, h - bh)
        label = int(rng.randint(0, len(CLASSES)))
        cv2.rectangle(img, (int(x1), int(y1)), (int(x1 + bw - 1), int(y1 + bh - 1)), COLORS_BGR[label], -1)
        boxes.append([x1, y1, x1 + bw, y1 + bh])
        labels.append(label)
    return img, np.asarray(boxes, np.float32), np.asarray(labels, np.int64)


@TRANSFORMS.register_module(force=True)
class ToyResize:
    """Resize the image (and boxes) to ``scale`` = (w, h) without keeping the ratio."""

    def __init__(self, scale: Sequence[int] = (64, 64)) -> None:
        self.scale = tuple(scale)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        img = results['img']
        h, w = img.shape[:2]
        sx, sy = self.scale[0] / w, self.scale[1] / h
        results['img'] = cv2.resize(img, self.scale, interpolation=cv2.INTER_LINEAR)
        results['img_shape'] = (self.scale[1], self.scale[0])
        results['scale_factor'] = (sx, sy)
        if 'gt_bboxes' in results:
            results['gt_bboxes'] = results['gt_bboxes'] * np.array([sx, sy, sx, sy], np.float32)
        return results


@TRANSFORMS.register_module(force=True)
class ToyRandomAugment:
    """Random horizontal flip (numpy RNG) and brightness jitter (python RNG): makes resume tests depend on
    both RNG states being restored."""

    def __init__(self, flip_prob: float = 0.5, brightness: float = 20.0) -> None:
        self.flip_prob, self.brightness = flip_prob, brightness

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        img = results['img'].astype(np.float32) + random.uniform(-self.brightness, self.brightness)
        if np.random.rand() < self.flip_prob:
            w = img.shape[1]
            img = img[:, ::-1]
            if 'gt_bboxes' in results:
                b = results['gt_bboxes'].copy()
                results['gt_bboxes'] = np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1).astype(np.float32)
        results['img'] = np.clip(img, 0, 255)
        return results


@TRANSFORMS.register_module(force=True)
class ToyNormalize:
    def __init__(self, mean: Sequence[float] = MEAN, std: Sequence[float] = STD, to_rgb: bool = True) -> None:
        self.mean, self.std, self.to_rgb = np.array(mean, np.float32), np.array(std, np.float32), to_rgb

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        img = results['img'].astype(np.float32)
        if self.to_rgb:
            img = img[..., ::-1]
        results['img'] = (img - self.mean) / self.std
        return results


@TRANSFORMS.register_module(force=True)
class ToyPackDetInputs:
    """Pack into the data-sample dict of the contract."""

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        img = np.ascontiguousarray(results['img'].transpose(2, 0, 1))
        img_shape = tuple(results.get('img_shape', results['img'].shape[:2]))
        return {
            'inputs': torch.from_numpy(img).float(),
            'gt_bboxes': torch.as_tensor(results.get('gt_bboxes', np.zeros((0, 4), np.float32))).float(),
            'gt_labels': torch.as_tensor(results.get('gt_labels', np.zeros((0,), np.int64))).long(),
            'gt_bboxes_ignore': torch.zeros((0, 4)),
            'meta': {'img_id': results.get('img_id'), 'img_path': results.get('img_path'),
                     'sample_idx': results.get('sample_idx'), 'ori_shape': tuple(results['ori_shape']),
                     'img_shape': img_shape, 'pad_shape': img_shape,
                     'scale_factor': tuple(results.get('scale_factor', (1.0, 1.0))), 'flip': False,
                     'flip_direction': None},
        }


@DATASETS.register_module(force=True)
class ToyDataset(torch.utils.data.Dataset):
    """``num_images`` deterministic images of coloured rectangles; written under ``data_root`` when given."""

    METAINFO = {'classes': CLASSES}
    summary_calls = 0  # how many times summary() ran, for the tests

    def __init__(self, num_images: int = 8, pipeline: Sequence[dict] = (), data_root: str | None = None,
                 seed: int = 0, test_mode: bool = False, img_size: Sequence[int] = (80, 60)) -> None:
        self.num_images, self.seed, self.test_mode = num_images, seed, test_mode
        self.img_size = tuple(img_size)
        self.data_root = data_root
        self.metainfo = dict(self.METAINFO)
        self.cat_ids = [10, 20]  # like a COCO dataset: label i is category cat_ids[i]
        # the dataset reads images and annotations itself, like the real Load* transforms would
        self.pipeline = [TRANSFORMS.build(t) for t in pipeline
                         if t['type'] not in ('LoadImageFromFile', 'LoadAnnotations')]
        if data_root:
            os.makedirs(data_root, exist_ok=True)
            for i in range(num_images):
                path = self.img_path(i)
                if not os.path.exists(path):
                    cv2.imwrite(path, make_item(i, seed, self.img_size)[0])

    def img_path(self, idx: int) -> str | None:
        return os.path.join(self.data_root, f'toy_{idx:03d}.png') if self.data_root else None

    def __len__(self) -> int:
        return self.num_images

    def get_ann_info(self, idx: int) -> dict[str, np.ndarray]:
        _, boxes, labels = make_item(idx, self.seed, self.img_size)
        return dict(bboxes=boxes, labels=labels, bboxes_ignore=np.zeros((0, 4), np.float32),
                    labels_ignore=np.zeros((0,), np.int64))

    def __getitem__(self, idx: int) -> dict[str, Any]:
        img, boxes, labels = make_item(idx, self.seed, self.img_size)
        if self.data_root:
            img = cv2.imread(self.img_path(idx))
        results = dict(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2], img_path=self.img_path(idx),
                       img_id=idx, sample_idx=idx, gt_bboxes=boxes, gt_labels=labels)
        for t in self.pipeline:
            results = t(results)
        return results

    def summary(self) -> str:
        type(self).summary_calls += 1
        return 'no bad items'


@MODELS.register_module(force=True)
class ToyDetector(nn.Module):
    """Two strided convs and a one-anchor-per-cell head (stride 4, anchor ``anchor_size`` pixels).

    Args:
        nan_after: make ``loss_bbox`` NaN from the ``nan_after + 1``-th call of ``loss`` on (for the NaN tests).
        dropout: channel dropout after the backbone (draws from torch's RNG in training).
    """

    def __init__(self, num_classes: int = 2, width: int = 8, anchor_size: float = 20.0,
                 nan_after: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.anchor_size, self.nan_after = num_classes, anchor_size, nan_after
        self.stride = 4
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.GroupNorm(2, width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, 2, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout))
        self.cls_conv = nn.Conv2d(width, num_classes + 1, 3, 1, 1)  # background is the last column
        self.reg_conv = nn.Conv2d(width, 4, 3, 1, 1)
        self.loss_calls = 0

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        x = self.backbone(images)
        return [self.cls_conv(x)], [self.reg_conv(x)]

    def _anchor_centers(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing='ij')
        return torch.stack([xs, ys], -1).reshape(-1, 2).float() * self.stride + self.stride / 2  # (HW, 2)

    def loss(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        self.loss_calls += 1
        cls_scores, bbox_preds = self(images)
        cls, reg = cls_scores[0], bbox_preds[0]
        n, _, h, w = cls.shape
        cls = cls.permute(0, 2, 3, 1).reshape(n, h * w, -1)
        reg = reg.permute(0, 2, 3, 1).reshape(n, h * w, 4)
        centers = self._anchor_centers(h, w, images.device)
        loss_cls, loss_bbox = [], []
        for i, t in enumerate(targets):
            labels = torch.full((h * w,), self.num_classes, dtype=torch.long, device=images.device)
            boxes = t['boxes']
            if len(boxes):
                c = (boxes[:, :2] + boxes[:, 2:]) / 2
                cell = (c / self.stride).long()
                idx = cell[:, 1].clamp(0, h - 1) * w + cell[:, 0].clamp(0, w - 1)
                labels[idx] = t['labels']
                wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1)
                target = torch.cat([(c - centers[idx]) / self.anchor_size, torch.log(wh / self.anchor_size)], 1)
                loss_bbox.append(F.smooth_l1_loss(reg[i, idx], target, reduction='sum') / len(boxes))
            else:
                loss_bbox.append(reg[i].sum() * 0)
            loss_cls.append(F.cross_entropy(cls[i], labels))
        loss_bbox = torch.stack(loss_bbox).mean()
        if self.nan_after is not None and self.loss_calls > self.nan_after:
            loss_bbox = loss_bbox * float('nan')
        return {'loss_cls': torch.stack(loss_cls).mean(), 'loss_bbox': loss_bbox}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, metas: list[dict[str, Any]], rescale: bool = True,
                max_per_img: int = 10) -> list[dict[str, torch.Tensor]]:
        cls_scores, bbox_preds = self(images)
        cls, reg = cls_scores[0], bbox_preds[0]
        n, _, h, w = cls.shape
        probs = cls.permute(0, 2, 3, 1).reshape(n, h * w, -1).float().softmax(-1)[..., :self.num_classes]
        reg = reg.permute(0, 2, 3, 1).reshape(n, h * w, 4).float()
        centers = self._anchor_centers(h, w, images.device)
        out = []
        for i, meta in enumerate(metas):
            scores, labels = probs[i].max(-1)
            k = min(max_per_img, scores.numel())
            scores, keep = scores.topk(k)
            labels, d = labels[keep], reg[i, keep]
            c = centers[keep] + d[:, :2] * self.anchor_size
            wh = d[:, 2:].clamp(max=4).exp() * self.anchor_size
            boxes = torch.cat([c - wh / 2, c + wh / 2], 1)
            ih, iw = meta['img_shape']
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, iw)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, ih)
            if rescale:
                sx, sy = meta['scale_factor']
                boxes = boxes / boxes.new_tensor([sx, sy, sx, sy])
                oh, ow = meta['ori_shape']
                boxes[:, 0::2] = boxes[:, 0::2].clamp(0, ow)
                boxes[:, 1::2] = boxes[:, 1::2].clamp(0, oh)
            out.append(dict(boxes=boxes, scores=scores, labels=labels))
        return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter + 1e-9)


@METRICS.register_module(force=True)
class ToyMetric(BaseMetric):
    """``toy/mAP``: the fraction of ground-truth boxes hit (IoU >= 0.5, same label) by a prediction scoring >= 0.3."""

    default_prefix = 'toy'

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            assert set(s) >= {'img_id', 'ori_shape', 'pred', 'gt'}, sorted(s)
            self.results.append((s['img_id'], s['pred'], s['gt']))

    def compute_metrics(self, results: list) -> dict[str, float]:
        assert self.dataset_meta is not None and 'classes' in self.dataset_meta
        hits = total = 0
        for _, pred, gt in results:
            keep = pred['scores'] >= 0.3
            boxes, labels = pred['boxes'][keep], pred['labels'][keep]
            total += len(gt['bboxes'])
            if len(boxes) and len(gt['bboxes']):
                ious = _iou(gt['bboxes'], boxes)
                same = gt['labels'][:, None] == labels[None]
                hits += int(((ious >= 0.5) & same).any(1).sum())
        print(f'toy metric: {hits}/{total} ground-truth boxes found over {len(results)} images')
        return {'mAP': hits / max(total, 1), 'num_images': float(len(results))}


def toy_pipeline(scale: Sequence[int] = (64, 64), augment: bool = False) -> list[dict]:
    steps = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
             dict(type='ToyResize', scale=tuple(scale))]
    if augment:
        steps.append(dict(type='ToyRandomAugment'))
    return steps + [dict(type='ToyNormalize', mean=MEAN, std=STD, to_rgb=True), dict(type='ToyPackDetInputs')]


def toy_cfg_dict(work_dir: str, data_root: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A complete training config over the toy parts; ``overrides`` replace top-level keys."""
    pipeline = toy_pipeline()
    cfg = dict(
        custom_imports=dict(imports=['toy'], allow_failed_imports=False),
        work_dir=work_dir,
        model=dict(type='ToyDetector', num_classes=2, width=8),
        train_dataloader=dict(batch_size=2, num_workers=0, persistent_workers=False, shuffle=True,
                              dataset=dict(type='ToyDataset', num_images=8, data_root=data_root, pipeline=pipeline)),
        val_dataloader=dict(batch_size=2, num_workers=0, shuffle=False,
                            dataset=dict(type='ToyDataset', num_images=4, data_root=data_root, pipeline=pipeline,
                                         test_mode=True)),
        val_evaluator=dict(type='ToyMetric'),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
                           clip_grad=dict(max_norm=10.0)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
                         dict(type='MultiStepLR', by_epoch=True, begin=0, end=4, milestones=[2], gamma=0.1)],
        train_cfg=dict(max_epochs=2, val_interval=1),
        auto_scale_lr=dict(enable=False, base_batch_size=2),
        default_hooks=dict(logger=dict(interval=2, tensorboard=False),
                           checkpoint=dict(interval=1, max_keep_ckpts=-1, save_best='auto')),
        env_cfg=dict(num_threads=1),
        seed=0,
        device='cpu',
    )
    cfg['test_dataloader'] = cfg['val_dataloader']
    cfg['test_evaluator'] = cfg['val_evaluator']
    cfg.update(overrides)
    return cfg


def toy_config(work_dir: str, data_root: str | None = None, **overrides: Any) -> Config:
    return Config(toy_cfg_dict(work_dir, data_root, **overrides))


def write_toy_config(path: str, work_dir: str, data_root: str | None = None, **overrides: Any) -> str:
    """Write the toy config as a Python config file (what the tool subprocesses read)."""
    cfg = toy_cfg_dict(work_dir, data_root, **overrides)
    with open(path, 'w') as f:
        for k, v in cfg.items():
            f.write(f'{k} = {v!r}\n')
    return path


_HOLDER = ('import sys, time\n'
           'from detkit.engine.work_dir import WorkDirLock\n'
           'WorkDirLock(sys.argv[1]).acquire()\n'
           'print("holding", flush=True)\n'
           'time.sleep(120)\n')


def hold_work_dir(work_dir: str) -> subprocess.Popen:
    """Start another process that holds ``work_dir``'s lock (as a running training does) until it is killed."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.Popen([sys.executable, '-c', _HOLDER, str(work_dir)], stdout=subprocess.PIPE, text=True,
                            env=env, cwd=root)
    assert proc.stdout.readline().strip() == 'holding'
    return proc
