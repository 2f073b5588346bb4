"""Export a detector to ONNX: pre-processing from a uint8 BGR image, the network, decoding and NMS in one graph.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT --out model.onnx
    python tools/deployment/export_onnx.py CONFIG CHECKPOINT --out model.onnx --dynamic-batch [--max-per-img 100]
    python tools/deployment/export_onnx.py CONFIG CHECKPOINT --out model.onnx --verify image.jpg

Without ``--dynamic-batch``: input ``image`` uint8 ``(H, W, 3)`` BGR (as ``cv2.imread`` returns it, any size);
outputs ``boxes`` float32 ``(K, 4)`` in that image's pixels, ``scores`` ``(K,)``, ``labels`` int64 ``(K,)``.
With it: ``image`` ``(N, H, W, 3)`` (same-size images), outputs padded to the detection cap (``(N, D, 4)``,
``(N, D)``, ``(N, D)``: zeros and label -1) plus ``num_dets`` ``(N,)``. The cap is ``--max-per-img``, else the
config's ``max_per_img``, else ``max_per_class x classes`` (soft-NMS keeps at most that many); a config with
neither needs ``--max-per-img``.

Soft-NMS (M2Det) has no ONNX operator: it is exported as ``max_per_class`` rounds, one ONNX ``Scan`` (exact for
the first ``max_per_class`` detections per class, all that the config keeps); ``--hard-nms`` exports hard NMS at the
same IoU threshold instead (other detections: the tool says so). A soft-NMS config with ``max_per_class=0`` (the
M2Det quickstart's) is refused before exporting, naming what to pass: ``--cfg-options
model.test_cfg.max_per_class=N`` (``N = max_per_img`` keeps the same detections) or ``--hard-nms``.

``--out`` must be a file (not a folder) that can be written and is none of the inputs: checked before the model is
loaded.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import time

import torch

from detkit.apis import init_detector
from detkit.datasets.transforms import imread
from detkit.deploy import describe, export_onnx, optional_import, paired_differences
from detkit.utils.config import DictAction
from detkit.utils.errors import run_tool
from detkit.utils.file_io import OutputPathError, check_output_file


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Export a detector (pre-processing, network, NMS) to ONNX')
    p.add_argument('config', help='config file')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--out', required=True, help='the .onnx file to write')
    p.add_argument('--dynamic-batch', action='store_true',
                   help='(N, H, W, 3) same-size batches; outputs padded to the cap, plus num_dets')
    p.add_argument('--max-per-img', type=int, default=None,
                   help='detections per image (the padded length with --dynamic-batch); default the config\'s')
    p.add_argument('--hard-nms', action='store_true', help='export a soft-NMS config with hard NMS instead')
    p.add_argument('--verify', metavar='IMAGE', help='run onnxruntime and PyTorch on this image and compare')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                   help='override config entries, e.g. model.test_cfg.max_per_img=100')
    args = p.parse_args(argv)
    if args.max_per_img is not None and args.max_per_img < 1:
        p.error(f'--max-per-img must be >= 1, got {args.max_per_img}')
    return args


def verify(path: str, graph: torch.nn.Module, image_path: str, batched: bool) -> tuple[float, float, int]:
    """Max box and score differences between onnxruntime and the same graph in PyTorch on one image (see
    :func:`detkit.deploy.paired_differences`), and the number of detections."""
    ort = optional_import('onnxruntime')
    img = imread(image_path)
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    feed = img[None] if batched else img
    ours = sess.run(None, {'image': feed})
    with torch.no_grad():
        ref = [t.numpy() for t in graph(torch.from_numpy(feed))]
    if batched:  # the first image's detections, without the padding
        ours, ref = ([o[0][:out[3][0]] for o in out[:3]] for out in (ours, ref))
    try:
        box, score = paired_differences(ours, ref)
    except ValueError as err:
        raise SystemExit(f'verify on {image_path}: onnxruntime and PyTorch disagree: {err}') from None
    return box, score, len(ref[0])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint}')
    try:  # before loading and exporting: a writable file that is none of the inputs
        check_output_file(args.out, [args.config, args.checkpoint, args.verify], '--out')
    except OutputPathError as err:
        raise SystemExit(str(err)) from None
    model = init_detector(args.config, args.checkpoint, device='cpu', cfg_options=args.cfg_options)
    cfg = model.test_cfg
    if cfg.nms.type == 'soft_nms' and not args.hard_nms and cfg.max_per_class <= 0:
        # the soft-NMS rounds need a count; max_per_img bounds what any one class can keep, so it is exact
        hint = (f'max_per_class={cfg.max_per_img} (= max_per_img: the same detections, as no class can keep more '
                'than the whole image)' if cfg.max_per_img > 0 else 'max_per_class=N')
        raise SystemExit(f'{args.config}: soft-NMS has no ONNX operator and is exported as test_cfg.max_per_class '
                         f'rounds per class, but max_per_class=0 (no limit): pass --cfg-options '
                         f'model.test_cfg.{hint}, or --hard-nms to export hard NMS instead')
    if cfg.nms.type == 'soft_nms':
        if args.hard_nms:
            print(f'WARNING: {args.config} post-processes with soft-NMS; --hard-nms exports HARD NMS at IoU '
                  f'{cfg.nms.iou_threshold} instead: the ONNX detections are NOT the config\'s (scores are not '
                  'decayed, overlapping boxes are removed)', file=sys.stderr)
        else:
            print(f'note: soft-NMS has no ONNX operator; it is exported as {cfg.max_per_class} rounds per '
                  'class (every detection the config keeps, the same scores)')
    if args.dynamic_batch and args.max_per_img is None and cfg.max_per_img <= 0:
        if cfg.max_per_class <= 0:
            raise SystemExit(f'--dynamic-batch pads the outputs to a number of detections per image, and '
                             f'{args.config} has no cap (max_per_img=0, max_per_class=0): give --max-per-img')
        print(f'note: {args.config} has max_per_img=0 (no cap); --dynamic-batch pads to max_per_class x classes = '
              f'{cfg.max_per_class * model.bbox_head.num_classes} (give --max-per-img to choose another)')
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    start = time.perf_counter()
    graph = export_onnx(model, args.out, dynamic_batch=args.dynamic_batch, max_dets=args.max_per_img,
                        hard_nms=args.hard_nms)
    print(f'wrote {args.out} ({osp.getsize(args.out) / 2**20:.1f} MiB) in {time.perf_counter() - start:.0f} s')
    print(describe(graph, model.bbox_head.num_classes))
    if graph.cfg.max_per_img <= 0 < graph.max_dets:
        print(f'detections per image capped at {graph.max_dets}')
    if args.verify:
        box, score, n = verify(args.out, graph, args.verify, args.dynamic_batch)
        print(f'verify on {args.verify}: {n} detections, onnxruntime vs PyTorch: boxes within {box:.2e} px, scores '
              f'within {score:.2e}')


if __name__ == '__main__':
    run_tool(main)
