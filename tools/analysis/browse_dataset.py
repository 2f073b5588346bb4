"""Save training samples as the network sees them (after augmentation) with their boxes drawn.

    python tools/analysis/browse_dataset.py configs/quickstart/ssd_shapes.py --out work_dirs/browse --num 20

The image tensor is un-normalised with the pipeline's ``Normalize`` mean/std (and turned back to BGR when
``to_rgb``) so the pictures show what the augmentations did.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from detkit.apis.inference import find_dataset_cfg
from detkit.datasets import build_dataset
from detkit.utils.config import DictAction, load_config
from detkit.utils.errors import run_tool
from detkit.utils.visualization import draw_detections


def find_normalize(dataset_cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``Normalize`` step (or a ``*Normalize`` variant) of the innermost dataset's pipeline, or ``None``."""
    inner = find_dataset_cfg(dataset_cfg)
    for step in inner.get('pipeline', []):
        if str(step.get('type', '')).endswith('Normalize'):
            return dict(step)
    return None


def to_bgr_image(inputs: Any, normalize: Mapping[str, Any] | None) -> np.ndarray:
    """A ``(3, H, W)`` network input back to an ``(H, W, 3)`` BGR uint8 image."""
    img = inputs.detach().cpu().numpy().transpose(1, 2, 0).astype(np.float32) if hasattr(inputs, 'detach') \
        else np.asarray(inputs, np.float32).transpose(1, 2, 0)
    if normalize is not None:
        img = img * np.asarray(normalize.get('std', [1, 1, 1]), np.float32) + \
            np.asarray(normalize.get('mean', [0, 0, 0]), np.float32)
        if normalize.get('to_rgb', True):  # Normalize turned BGR into RGB: turn it back for OpenCV
            img = img[..., ::-1]
    return np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description='Save augmented training samples with their boxes')
    p.add_argument('config', help='config file')
    p.add_argument('--out', default='work_dirs/browse_dataset', help='output folder')
    p.add_argument('--num', type=int, default=20, help='number of samples')
    p.add_argument('--split', choices=['train', 'val', 'test'], default='train', help='which dataloader\'s dataset')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')
    args = p.parse_args(argv)

    cfg = load_config(args.config, args.cfg_options)
    loader_cfg = cfg.get(f'{args.split}_dataloader')
    if not loader_cfg or 'dataset' not in loader_cfg:
        raise SystemExit(f'{args.config} has no {args.split}_dataloader.dataset')
    dataset = build_dataset(loader_cfg['dataset'])
    normalize = find_normalize(loader_cfg['dataset'])
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
    os.makedirs(args.out, exist_ok=True)
    n = min(args.num, len(dataset))
    for i in range(n):
        sample = dataset[i]
        img = to_bgr_image(sample['inputs'], normalize)
        img = draw_detections(img, sample['gt_bboxes'], sample['gt_labels'], None, classes)
        ignore = sample.get('gt_bboxes_ignore')
        for box in (ignore.tolist() if ignore is not None else []):  # crowd / difficult regions in grey
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cv2.rectangle(img, (x1, y1), (x2, y2), (160, 160, 160), 1)
        src = (sample.get('meta') or {}).get('img_path') or f'item_{i}'
        cv2.imwrite(osp.join(args.out, f'{i:04d}_{osp.splitext(osp.basename(str(src)))[0]}.jpg'), img)
    print(f'wrote {n} samples to {args.out}')


if __name__ == '__main__':
    run_tool(main)
