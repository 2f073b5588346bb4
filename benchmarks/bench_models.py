"""Detectors: detkit vs torchvision on the CPU, same weights, same batch (SSD300, RetinaNet), and M2Det320 alone.

    python benchmarks/bench_models.py [--models ssd300 retinanet m2det320] [--batch 8] [--iters 10] [--threads N]
                                      [--quick]

**SSD300-VGG16** vs torchvision's ``ssd300_vgg16``:

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

**RetinaNet-R50-FPN** vs torchvision's ``retinanet_resnet50_fpn`` (91 classes, P6/P7 from P5, torchvision's
random initialisation converted with ``convert_torchvision_retinanet_resnet50_fpn``), inference (forward +
post-processing) at 512x512 and 800x800, batch ``--retina-batch``: torchvision runs its transform (normalisation and
a same-size resize: ``min_size``/``max_size`` set to the input), backbone, head and ``postprocess_detections``;
detkit runs ``predict`` on the normalised batch. Both post-process with score > 0.05, 1000 candidates per level, NMS
0.5 and 100 per image. The classification biases are drawn from N(-3, 1) in both (the same values), so that, as
with a trained model, thousands of candidates pass the threshold and the post-processing does real work. The
"detkit, channels_last" row runs the same detkit model with ``channels_last=True`` (NHWC convolutions), the
"detkit fast='exact'" row detkit's exact fast path (``init_detector(..., fast='exact')``: batch norms folded into the
convolutions, NHWC; the same detections), and the last row compares that path with torchvision given channels-last
weights as well (its convolutions then run NHWC too), the fairest peer.

**M2Det320-VGG16** (``configs/m2det/m2det320_vgg_coco.py``, soft-NMS) alone, images/s of ``predict``, with
classification biases from N(0, 2) so that some classes score above its 0.1 threshold.

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
from torchvision.models.detection import retinanet_resnet50_fpn, ssd300_vgg16
from torchvision.ops import box_iou

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

from detkit.apis.fast import make_fast  # noqa: E402
from detkit.models.utils.weights import (convert_torchvision_retinanet_resnet50_fpn,  # noqa: E402
                                         convert_torchvision_ssd300_vgg16)
from detkit.registry import MODELS  # noqa: E402
from detkit.utils import load_config  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(__file__), '..', 'configs')
CONFIG = os.path.join(CONFIGS, 'ssd', 'ssd300_coco.py')
RETINA_CONFIG = os.path.join(CONFIGS, 'retinanet', 'retinanet_r50_fpn_1x_coco.py')
M2DET_CONFIG = os.path.join(CONFIGS, 'm2det', 'm2det320_vgg_coco.py')
NUM_CLASSES = 80  # + background = 81 outputs per anchor
# torchvision's ssd300_vgg16 normalisation: 0-1 RGB minus these means, times 255
TV_MEAN = torch.tensor([0.48235, 0.45882, 0.40784]).view(1, 3, 1, 1)
# torchvision's detection transform for RetinaNet: ImageNet mean and std on 0-1 RGB (detkit's Normalize on 0-255)
TV_IMAGENET_MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
TV_IMAGENET_STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=8, help='images per batch (default 8)')
    parser.add_argument('--iters', type=int, default=10, help='timed iterations per measurement (default 10)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed iterations first (default 2)')
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads (default: torch\'s)')
    parser.add_argument('--models', nargs='+', choices=['ssd300', 'retinanet', 'm2det320'],
                        default=['ssd300', 'retinanet', 'm2det320'], help='which detectors (default: all)')
    parser.add_argument('--retina-batch', type=int, default=2, help='RetinaNet and M2Det batch (default 2)')
    parser.add_argument('--retina-iters', type=int, default=5, help='RetinaNet and M2Det timed iterations (default 5)')
    parser.add_argument('--quick', action='store_true', help='batch 2, 3 iterations, 1 warm-up: a smoke run')
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.iters, args.warmup = 2, 3, 1
        args.retina_batch, args.retina_iters = 1, 2
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


def run_ssd300(args: argparse.Namespace) -> list[tuple[str, float, float, float, float]]:
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

    return measure([('inference: forward + post-processing', ours_infer, tv_infer),
                    ('post-processing only', ours_post, tv_post),
                    ('train step: loss + backward', ours_train, tv_train),
                    ('loss only (+ its backward)', ours_loss, tv_loss)], args.warmup, args.iters)


def measure(pairs: list[tuple[str, Callable[[], object], Callable[[], object]]], warmup: int,
            iters: int) -> list[tuple[str, float, float, float, float]]:
    """``(name, ours wall, ours cpu, theirs wall, theirs cpu)`` medians of each ``(name, ours, theirs)`` pair."""
    rows = []
    for name, a, b in pairs:
        for _ in range(warmup):
            a(), b()
        ta, tb = [], []
        for i in range(iters):
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


def build_retinanets(channels_last: bool = False):
    """torchvision's retinanet_resnet50_fpn and detkit's conversion of it, with the same N(-3, 1) class biases."""
    torch.manual_seed(0)
    tv = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91, score_thresh=0.05,
                                nms_thresh=0.5, detections_per_img=100, topk_candidates=1000).eval()
    with torch.no_grad():
        tv.head.classification_head.cls_logits.bias.normal_(-3.0, 1.0)
    cfg = load_config(RETINA_CONFIG, {
        'model.backbone.out_indices': (1, 2, 3), 'model.neck.start_level': 0,
        'model.neck.add_extra_convs': 'on_output', 'model.neck.relu_before_extra_convs': True,
        'model.bbox_head.num_classes': 91, 'model.channels_last': channels_last})
    ours = MODELS.build(cfg.model).eval()
    ours.load_state_dict(convert_torchvision_retinanet_resnet50_fpn(tv.state_dict()))
    return ours, tv


def run_retinanet(args: argparse.Namespace) -> list[tuple[str, float, float, float, float]]:
    ours, tv = build_retinanets()
    ours_nhwc, _ = build_retinanets(channels_last=True)
    ours_fast = make_fast(build_retinanets()[0], 'exact')  # batch norms folded + NHWC, detections unchanged
    tv_nhwc = build_retinanets()[1].to(memory_format=torch.channels_last)  # torchvision given NHWC weights too
    rows = []
    for size in (512, 800):
        g = torch.Generator().manual_seed(size)
        images01 = torch.rand(args.retina_batch, 3, size, size, generator=g)
        images = (images01 * 255 - TV_IMAGENET_MEAN) / TV_IMAGENET_STD  # detkit's Normalize of the same pixels
        tv.transform.min_size, tv.transform.max_size = (size,), size  # no upscaling to 800 x 1333
        metas = [{'ori_shape': (size, size), 'img_shape': (size, size), 'scale_factor': (1.0, 1.0)}] * len(images)

        def ours_infer(model=ours):
            model.predict(images, metas)

        def tv_infer(model=tv):
            with torch.no_grad():
                model(list(images01))

        rows += measure([(f'{size}x{size}: detkit', ours_infer, tv_infer),
                         (f'{size}x{size}: detkit, channels_last', lambda: ours_infer(ours_nhwc), tv_infer),
                         (f"{size}x{size}: detkit fast='exact'", lambda: ours_infer(ours_fast), tv_infer),
                         (f"{size}x{size}: fast='exact' vs tv NHWC", lambda: ours_infer(ours_fast),
                          lambda: tv_infer(tv_nhwc))],
                        1, args.retina_iters)
    return rows


def run_m2det(args: argparse.Namespace) -> tuple[float, float]:
    """M2Det320 ``predict`` images/s (wall, CPU time)."""
    torch.manual_seed(0)
    model = MODELS.build(load_config(M2DET_CONFIG).model).eval()
    with torch.no_grad():
        for conv in model.bbox_head.cls_convs:
            conv.bias.normal_(0.0, 2.0)
    images = torch.randn(args.retina_batch, 3, 320, 320) * 50
    metas = [{'ori_shape': (320, 320), 'img_shape': (320, 320), 'scale_factor': (1.0, 1.0)}] * len(images)
    model.predict(images, metas)
    times = [timeit(lambda: model.predict(images, metas)) for _ in range(args.retina_iters)]
    return (args.retina_batch / statistics.median(t[0] for t in times),
            args.retina_batch / statistics.median(t[1] for t in times))


def cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def print_rows(rows, batch: int, peer: str) -> None:
    print(f'| {"measurement":<38} | {"detkit img/s":>12} | {peer + " img/s":>17} | {"ratio":>6} '
          f'| {"ratio, CPU time":>15} |')
    print(f'|{"-" * 40}|{"-" * 13}:|{"-" * 18}:|{"-" * 7}:|{"-" * 16}:|')
    for name, ours_wall, ours_cpu, theirs_wall, theirs_cpu in rows:
        print(f'| {name:<38} | {batch / ours_wall:12.2f} | {batch / theirs_wall:17.2f} | '
              f'{theirs_wall / ours_wall:5.2f}x | {theirs_cpu / ours_cpu:14.2f}x |')


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'machine: {cpu_model()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, torchvision '
          f'{torchvision.__version__}; CPU, one process, {torch.get_num_threads()} threads')
    if 'ssd300' in args.models:
        rows = run_ssd300(args)
        print(f'\nSSD300-VGG16, 81 classes, batch {args.batch} of 300x300, {args.iters} timed iterations (median)')
        print_rows(rows, args.batch, 'torchvision')
    if 'retinanet' in args.models:
        rows = run_retinanet(args)
        print(f'\nRetinaNet-R50-FPN, 91 classes, forward + post-processing, batch {args.retina_batch}, '
              f'{args.retina_iters} timed iterations (median)')
        print_rows(rows, args.retina_batch, 'torchvision')
    if 'm2det320' in args.models:
        wall, cpu = run_m2det(args)
        print(f'\nM2Det320-VGG16 (soft-NMS), predict, batch {args.retina_batch}: {wall:.2f} img/s '
              f'({cpu:.2f} img/s of process CPU time)')
    print('\nimg/s and "ratio" from wall-clock medians; "ratio, CPU time" from the medians of process CPU time. '
          'ratio > 1: detkit is faster.')


if __name__ == '__main__':
    main()
