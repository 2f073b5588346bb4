"""Evaluate a checkpoint on the test set; optionally save the detections and draw them.

    python tools/test.py CONFIG CHECKPOINT                          # the config's test_evaluator
    python tools/test.py CONFIG CHECKPOINT --eval voc coco          # VOC AP table and COCO summary
    python tools/test.py CONFIG CHECKPOINT --out dets.json          # COCO-style detections (xywh, category ids)
    python tools/test.py CONFIG CHECKPOINT --out dets.pkl           # per image, per class (n, 5) arrays
    python tools/test.py CONFIG CHECKPOINT --show-dir vis/          # annotated images

``--show-dir`` mirrors the images' paths below their common parent folder (``a/x.jpg`` and ``b/x.jpg`` stay two
files); neither it nor ``--out`` may write over an input (the images, the config, the checkpoint, the annotations).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import os.path as osp
import pickle
import time
from typing import Any

import cv2
import torch

from detkit.apis import init_detector
from detkit.apis.results import to_coco_detections, to_per_class_arrays
from detkit.engine import build_dataloader, build_evaluator, evaluate, setup_env
from detkit.engine.checkpoint import check_checkpoint_classes, checkpoint_meta
from detkit.engine.config_check import check_config
from detkit.engine.logger import log_level_value
from detkit.engine.trainer import check_num_classes
from detkit.utils.config import DictAction, load_config
from detkit.utils.file_io import OutputPathError, check_not_inputs, check_output_file, check_writable, imwrite, \
    mirror_paths
from detkit.utils.errors import run_tool
from detkit.utils.visualization import draw_detections

#: --eval name -> metric type registered in METRICS
EVAL_METRICS = {'voc': 'VOCMetric', 'coco': 'CocoMetric'}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Test (evaluate) a detector checkpoint')
    p.add_argument('config', help='config file')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--eval', nargs='+', choices=sorted(EVAL_METRICS),
                   help='metrics to compute instead of the config\'s test_evaluator')
    p.add_argument('--out', help='write the detections: .json (COCO results) or .pkl (per-class arrays)')
    p.add_argument('--show-dir', help='write images with the detections drawn into this directory')
    p.add_argument('--show-score-thr', type=float, default=0.3, help='score threshold for --show-dir')
    p.add_argument('--work-dir', help='also write the metrics as JSON into this directory')
    p.add_argument('--device', default=None, help='cpu or cuda (default: cuda when available)')
    p.add_argument('--fast', choices=['exact', 'bf16'], default=None,
                   help='faster CPU inference: exact (batch norms folded, channels-last: the same detections) or '
                        'bf16 (also bfloat16 autocast: faster, not exact; see detkit/apis/fast.py)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                   help='override config entries, e.g. test_dataloader.batch_size=4')
    args = p.parse_args(argv)
    if args.out and not args.out.endswith(('.json', '.pkl', '.pickle')):
        p.error(f'--out must end in .json, .pkl or .pickle, got {args.out}')
    return args


def eval_metric_cfgs(names: list[str], cfg: Any) -> list[dict[str, Any]]:
    """Metric configs for ``--eval`` names, reusing the config's own entry of the same type (its arguments)."""
    configured = cfg.get('test_evaluator') or cfg.get('val_evaluator') or []
    if isinstance(configured, dict):
        configured = [configured]
    by_type = {c.get('type'): c for c in configured}
    return [dict(by_type.get(EVAL_METRICS[n], {'type': EVAL_METRICS[n]})) for n in names]


def dataset_image_paths(dataset: Any) -> list[str] | None:
    """Every item's ``img_path`` (``get_data_info``), or ``None`` for a dataset without ``get_data_info``."""
    if not hasattr(dataset, 'get_data_info'):
        return None
    return [p for p in (dataset.get_data_info(i).get('img_path') for i in range(len(dataset))) if p]


def show_dir_targets(paths: list[str], show_dir: str, inputs: list[str | None]) -> dict[str, str]:
    """``{absolute image path: drawing path}`` for ``--show-dir``: the images' paths below their common parent directory
    (unique names), none of them one of ``inputs`` (the images themselves, the config, ...).

    Raises:
        SystemExit: naming ``--show-dir`` and the input a drawing would overwrite.
    """
    targets = mirror_paths(paths, show_dir)
    try:
        check_not_inputs(targets.values(), inputs, f'--show-dir {show_dir}')
    except OutputPathError as err:
        raise SystemExit(str(err)) from None
    return {osp.abspath(src): dst for src, dst in targets.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    try:  # before the work: outputs that can be written and are none of the inputs
        if args.out:
            check_output_file(args.out, [args.config, args.checkpoint], '--out')
        if args.show_dir:
            check_writable(args.show_dir, directory=True, option='--show-dir')
    except OutputPathError as err:
        raise SystemExit(str(err)) from None
    cfg = load_config(args.config, args.cfg_options)
    check_config(cfg)  # a misspelled key is an error before the model and the data are built
    logging.getLogger('detkit').setLevel(log_level_value(cfg.get('log_level') or 'INFO'))
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    setup_env(cfg.get('env_cfg'), torch.device(device).type)
    model = init_detector(cfg, args.checkpoint, device=device, fast=args.fast)

    loader_cfg = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    if not loader_cfg:
        raise SystemExit(f'{args.config} has neither test_dataloader nor val_dataloader')
    loader = build_dataloader(loader_cfg, train=False, device_type=torch.device(device).type,
                              name='test_dataloader')
    # label i is the i-th class name: another list or order than the checkpoint's would score the wrong classes
    test_classes = (getattr(loader.dataset, 'metainfo', None) or {}).get('classes')
    try:
        check_checkpoint_classes(checkpoint_meta(args.checkpoint), test_classes, args.checkpoint, 'test')
        check_num_classes(model, test_classes, f'test set of {args.config}')
    except ValueError as err:
        raise SystemExit(f'error: {err}') from None
    inputs = [args.config, args.checkpoint, getattr(loader.dataset, 'ann_file', None)]
    if args.out:
        try:
            check_not_inputs([args.out], inputs, f'--out {args.out}')
        except OutputPathError as err:
            raise SystemExit(str(err)) from None
    image_paths = dataset_image_paths(loader.dataset) if args.show_dir else None
    show_targets = show_dir_targets(image_paths, args.show_dir, inputs + image_paths) if image_paths else None
    metric_cfgs = eval_metric_cfgs(args.eval, cfg) if args.eval else \
        (cfg.get('test_evaluator') or cfg.get('val_evaluator'))
    evaluator = build_evaluator(metric_cfgs)
    keep = bool(args.out or args.show_dir)
    result = evaluate(model, loader, evaluator, torch.device(device), keep_predictions=keep, desc='test')

    for k, v in result.metrics.items():
        print(f'{k}: {v:.4f}' if isinstance(v, float) else f'{k}: {v}')
    dataset = loader.dataset
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes') or model.dataset_meta.get('classes')
    if args.out:
        preds = sorted(result.predictions, key=lambda p: p[0])  # dataset order
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        if args.out.endswith('.json'):
            with open(args.out, 'w') as f:
                json.dump(to_coco_detections(preds, dataset), f)
        else:
            if not classes:
                raise SystemExit('--out .pkl needs the class names (dataset.metainfo["classes"])')
            with open(args.out, 'wb') as f:
                pickle.dump(to_per_class_arrays(preds, len(classes)), f)
        print(f'wrote {len(preds)} images\' detections to {args.out}')
    if args.show_dir:
        if show_targets is None:  # a dataset without get_data_info: the paths of the predicted items
            paths = [meta['img_path'] for _, meta, _ in result.predictions if meta.get('img_path')]
            show_targets = show_dir_targets(paths, args.show_dir, inputs + paths)
        os.makedirs(args.show_dir, exist_ok=True)
        for idx, meta, pred in result.predictions:
            path = meta.get('img_path')
            dst = show_targets.get(osp.abspath(path)) if path else None
            img = cv2.imread(path) if dst else None
            if img is None:
                print(f'--show-dir: cannot read image {path!r} of item {idx}; skipped')
                continue
            vis = draw_detections(img, pred['boxes'], pred['labels'], pred['scores'], classes, args.show_score_thr)
            os.makedirs(osp.dirname(dst), exist_ok=True)
            try:
                imwrite(dst, vis)
            except OSError as err:
                raise SystemExit(str(err)) from None
        print(f'wrote annotated images to {args.show_dir}')
    if args.work_dir:
        os.makedirs(args.work_dir, exist_ok=True)
        out = osp.join(args.work_dir, f'eval_{time.strftime("%Y%m%d_%H%M%S")}.json')
        with open(out, 'w') as f:
            json.dump(dict(config=args.config, checkpoint=args.checkpoint,
                           metrics={k: (float(v) if hasattr(v, '__float__') else v)
                                    for k, v in result.metrics.items()}), f, indent=2)
    return result.metrics


if __name__ == '__main__':
    run_tool(main)
