"""SSD300-VGG16: detkit vs torchvision's ``ssd300_vgg16`` on the CPU, same weights, same batch.

    python benchmarks/bench_models.py [--batch 8] [--iters 10] [--threads N] [--quick]

Both models have 81 classes (80 + background) and the same weights (torchvision's random initialisation copied
into detkit with the converter, so both post-process identical scores). Measured per batch, interleaving the two
libraries (in alternating order) so that load from other processes hits both alike, and reported as medians of
wall-clock time (images/s and ratio) and of process CPU time (a second ratio, steadier on a shared machine):

* inference: forward + post-processing (torchvision: its transform, forward, post-processing, box rescaling;
  detkit: ``predict``), both with score threshold 0.02, NMS IoU 0.45 and 200 detections per image;
* post-processing alone, from the per-level conv outputs of the head (torchvision: its head's reshaping and
  ``postprocess_detections``; detkit: ``SSDHead.predict``);
* training step: loss + backward (torchvision: train-mode forward; detkit: ``loss``) on 5 random boxes per image;
* loss alone (+ its backward), from the per-level conv outputs of the head (torchvision: its head's reshaping,
  matcher and ``compute_loss``; detkit: ``SSDHead.loss``).

A ratio above 1 means detkit is faster.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torchvision
from torchvision.models.detection import ssd300_vgg16
from torchvision.ops import box_iou

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

from detkit.models.utils import convert_torchvision_ssd300_vgg16  # noqa: E402
from detkit.registry import MODELS  # noqa: E402
from detkit.utils import load_config  # noqa: E402

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'configs', 'ssd', 'ssd300_coco.py')
NUM_CLASSES = 80  # + background = 81 outputs per anchor
# torchvision's ssd300_vgg16 normalisation: 0-1 RGB minus these means, times 255
TV_MEAN = torch.tensor([0.48235, 0.45882, 0.40784]).view(1, 3, 1, 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=8, help='images per batch (default 8)')
    parser.add_argument('--iters', type=int, default=10, help='timed iterations per measurement (default 10)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed iterations first (default 2)')
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads (default: torch\'s)')
    parser.add_argument('--quick', action='store_true', help='batch 2, 3 iterations, 1 warm-up: a smoke run')
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.iters, args.warmup = 2, 3, 1
    return args


def make_batch(n: int, seed: int = 0):
    """0-1 RGB images for torchvision, the same images normalised for detkit, and 5 random boxes per image."""
    g = torch.Generator().manual_seed(seed)
    images01 = torch.rand(n, 3, 300, 300, generator=g)
    images = (images01 - TV_MEAN) * 255  # what detkit's Normalize(mean, std=1) gives for the same pixels
    targets = []
    for _ in range(n):
        xy = torch.rand(5, 2, generator=g) * 200
        wh = torch.rand(5, 2, generator=g) * 90 + 10
        targets.append({'boxes': torch.cat([xy, xy + wh], 1),
                        'labels': torch.randint(0, NUM_CLASSES, (5,), generator=g)})
    return images01, images, targets


def build_models():
    torch.manual_seed(0)
    tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1, score_thresh=0.02,
                      nms_thresh=0.45, detections_per_img=200)
    cfg = load_config(CONFIG)
    ours = MODELS.build(cfg.model)
    ours.load_state_dict(convert_torchvision_ssd300_vgg16(tv.state_dict()))
    return ours, tv


def tv_head_levels(tv, feats):
    """Per-level raw conv outputs of torchvision's head, ``(N, A * K, H, W)``, before its reshaping."""
    cls = [m(f) for m, f in zip(tv.head.classification_head.module_list, feats)]
    reg = [m(f) for m, f in zip(tv.head.regression_head.module_list, feats)]
    return cls, reg


def tv_flatten(levels, k):
    """torchvision's SSDScoringHead reshaping: per-level ``(N, A * K, H, W)`` -> ``(N, HWA, K)``."""
    out = []
    for r in levels:
        n, _, h, w = r.shape
        out.append(r.view(n, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k))
    return torch.cat(out, dim=1)


def tv_loss_only(tv, cls_levels, reg_levels, anchors, targets):
    """torchvision's training path after the head's convs: reshaping, matching and compute_loss."""
    head_outputs = {'cls_logits': tv_flatten(cls_levels, NUM_CLASSES + 1), 'bbox_regression': tv_flatten(reg_levels, 4)}
    matched = [tv.proposal_matcher(box_iou(t['boxes'], a)) for a, t in zip(anchors, targets)]
    return tv.compute_loss(targets, head_outputs, anchors, matched)


def timeit(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call.

    On a shared machine the CPU time is the steadier of the two: time spent descheduled for other processes is
    not counted (with one thread; with more, idle OpenMP threads may spin and count).
    """
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def run(args: argparse.Namespace) -> list[tuple[str, float, float, float, float]]:
    if args.threads:
        torch.set_num_threads(args.threads)
    ours, tv = build_models()
    images01, images, targets = make_batch(args.batch)
    tv_images = list(images01)
    tv_targets = [{'boxes': t['boxes'], 'labels': t['labels'] + 1} for t in targets]  # background is 0 there
    metas = [{'ori_shape': (300, 300), 'img_shape': (300, 300), 'scale_factor': (1.0, 1.0)}] * args.batch

    # per-level head conv outputs and anchors of both, computed once, for the post-processing and loss rows
    with torch.no_grad():
        ours_out = ours(images)
        image_list = tv.transform(tv_images)[0]
        feats = list(tv.backbone(image_list.tensors).values())
        tv_levels = tv_head_levels(tv, feats)
        tv_anchors = tv.anchor_generator(image_list, feats)
    ours_out_grad = [[t.clone().requires_grad_() for t in level] for level in ours_out]
    tv_levels_grad = [[t.clone().requires_grad_() for t in level] for level in tv_levels]

    def ours_infer():
        ours.eval()
        ours.predict(images, metas)

    def tv_infer():
        tv.eval()
        with torch.no_grad():
            tv(tv_images)

    def ours_post():
        ours.bbox_head.predict(*ours_out, metas, test_cfg=ours.test_cfg)

    def tv_post():
        with torch.no_grad():
            head_outputs = {'cls_logits': tv_flatten(tv_levels[0], NUM_CLASSES + 1),
                            'bbox_regression': tv_flatten(tv_levels[1], 4)}
            tv.postprocess_detections(head_outputs, tv_anchors, image_list.image_sizes)

    def ours_train():
        ours.train()
        sum(ours.loss(images, targets).values()).backward()
        ours.zero_grad(set_to_none=True)

    def tv_train():
        tv.train()
        sum(tv(tv_images, tv_targets).values()).backward()
        tv.zero_grad(set_to_none=True)

    def ours_loss():
        sum(ours.bbox_head.loss(*ours_out_grad, targets).values()).backward()

    def tv_loss():
        sum(tv_loss_only(tv, *tv_levels_grad, tv_anchors, tv_targets).values()).backward()

    rows = []
    for name, a, b in [('inference: forward + post-processing', ours_infer, tv_infer),
                       ('post-processing only', ours_post, tv_post),
                       ('train step: loss + backward', ours_train, tv_train),
                       ('loss only (+ its backward)', ours_loss, tv_loss)]:
        for _ in range(args.warmup):
            a(), b()
        ta, tb = [], []
        for i in range(args.iters):
            # interleaved, so that background load hits both alike, and in alternating order, so that neither
            # always runs right after the other (memory just freed, caches just filled)
            if i % 2 == 0:
                ta.append(timeit(a))
                tb.append(timeit(b))
            else:
                tb.append(timeit(b))
                ta.append(timeit(a))
        rows.append((name, *(statistics.median(t[k] for t in ta) for k in (0, 1)),
                     *(statistics.median(t[k] for t in tb) for k in (0, 1))))
        print(f'  measured {name}', file=sys.stderr, flush=True)
    return rows


def cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = run(args)
    print(f'SSD300-VGG16, 81 classes, batch {args.batch} of 300x300, {args.iters} timed iterations (median), '
          f'CPU, one process, {torch.get_num_threads()} threads')
    print(f'machine: {cpu_model()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, torchvision '
          f'{torchvision.__version__}')
    print(f'| {"measurement":<38} | {"detkit img/s":>12} | {"torchvision img/s":>17} | {"ratio":>6} '
          f'| {"ratio, CPU time":>15} |')
    print(f'|{"-" * 40}|{"-" * 13}:|{"-" * 18}:|{"-" * 7}:|{"-" * 16}:|')
    for name, ours_wall, ours_cpu, theirs_wall, theirs_cpu in rows:
        print(f'| {name:<38} | {args.batch / ours_wall:12.2f} | {args.batch / theirs_wall:17.2f} | '
              f'{theirs_wall / ours_wall:5.2f}x | {theirs_cpu / ours_cpu:14.2f}x |')
    print('img/s and "ratio" from wall-clock medians; "ratio, CPU time" from the medians of process CPU time. '
          'ratio > 1: detkit is faster.')

if __name__ == '__main__':
    main()
