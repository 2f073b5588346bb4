"""NMS speed: detkit's compiled CPU kernels vs torchvision.ops vs detkit's pure-PyTorch fallback.

Same inputs for all three, one process, medians over repeats; every result is checked equal to torchvision's.

    python benchmarks/bench_nms.py            # full table (torchvision takes ~7 s per run at 50k boxes)
    python benchmarks/bench_nms.py --quick    # 1k, 10k and the SSD case, fewer repeats

Cases:
    random N: N boxes with corners uniform in a 1000x1000 image and sides of 1..61 px, IoU 0.5 (most are kept,
        so torchvision's all-pairs loop does ~N^2/2 IoUs);
    SSD300 post-processing: 8732 boxes shaped like SSD300's anchors in a 300x300 image with 80 random class
        scores each; the 6000 best (box, class) pairs go through class-aware NMS at IoU 0.45.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import fmt_seconds, machine, markdown_table, median_time  # noqa: E402

from detkit.ops import batched_nms, nms  # noqa: E402
from detkit.ops import nms_fallback  # noqa: E402
from detkit.ops._ext import has_kernel  # noqa: E402


def random_boxes(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 1000
    wh = torch.rand(n, 2, generator=g) * 60 + 1
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


def ssd300_candidates(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top 6000 of 8732 SSD300-like boxes x 80 class scores: (boxes, scores, class ids)."""
    g = torch.Generator().manual_seed(seed)
    boxes = []
    for size, anchors, scale in ((38, 4, 30), (19, 6, 60), (10, 6, 111), (5, 6, 162), (3, 4, 213), (1, 4, 264)):
        stride = 300 / size
        c = (torch.arange(size) + 0.5) * stride
        cy, cx = torch.meshgrid(c, c, indexing='ij')
        ratios = [1, 1, 2, 0.5, 3, 1 / 3][:anchors]
        for k, r in enumerate(ratios):
            s = scale * (1.3 if k == 1 else 1.0)
            w, h = s * math.sqrt(r), s / math.sqrt(r)
            jitter = torch.randn(size * size, 4, generator=g) * 0.1 * s  # regression outputs
            b = torch.stack([cx.flatten() - w / 2, cy.flatten() - h / 2, cx.flatten() + w / 2, cy.flatten() + h / 2], 1)
            boxes.append(b + jitter)
    boxes = torch.cat(boxes).clamp(0, 300)  # (8732, 4)
    assert boxes.shape[0] == 8732
    scores = torch.softmax(torch.randn(8732, 81, generator=g) * 3, 1)[:, :80]  # (8732, 80)
    top, flat = scores.flatten().topk(6000)
    return boxes[flat // 80], top, flat % 80


def run(quick: bool) -> str:
    assert has_kernel('nms', 'cpu'), 'detkit._C is not built: run `make install` first'
    rows = []
    sizes = [1000, 10_000] if quick else [1000, 10_000, 50_000]
    for n in sizes:
        boxes, scores = random_boxes(n)
        reps = 3 if quick else (3 if n >= 50_000 else 7 if n >= 10_000 else 25)
        expected = torchvision.ops.nms(boxes, scores, 0.5)
        assert torch.equal(nms(boxes, scores, 0.5), expected)
        assert torch.equal(nms_fallback.nms_torch(boxes, scores, 0.5), expected)
        t_tv = median_time(lambda: torchvision.ops.nms(boxes, scores, 0.5), reps, warmup=0 if n >= 50_000 else 1)
        t_c = median_time(lambda: nms(boxes, scores, 0.5), max(reps, 7))
        t_fb = median_time(lambda: nms_fallback.nms_torch(boxes, scores, 0.5), reps)
        rows.append([f'nms, {n:,} random boxes ({len(expected):,} kept)', fmt_seconds(t_c), fmt_seconds(t_tv),
                     fmt_seconds(t_fb), f'{t_tv / t_c:.1f}x', f'{t_fb / t_tv:.2f}x'])
    boxes, scores, labels = ssd300_candidates()
    expected = torchvision.ops.batched_nms(boxes, scores, labels, 0.45)
    assert torch.equal(batched_nms(boxes, scores, labels, 0.45), expected)
    assert torch.equal(nms_fallback.batched_nms_torch(boxes, scores, labels, 0.45), expected)
    reps = 7 if quick else 25
    t_tv = median_time(lambda: torchvision.ops.batched_nms(boxes, scores, labels, 0.45), reps)
    t_c = median_time(lambda: batched_nms(boxes, scores, labels, 0.45), reps)
    t_fb = median_time(lambda: nms_fallback.batched_nms_torch(boxes, scores, labels, 0.45), reps)
    rows.append([f'batched_nms, SSD300 top 6,000 of 8,732x80 ({len(expected):,} kept)', fmt_seconds(t_c),
                 fmt_seconds(t_tv), fmt_seconds(t_fb), f'{t_tv / t_c:.1f}x', f'{t_fb / t_tv:.2f}x'])
    header = ['case', 'detkit._C (CPU)', 'torchvision', 'detkit fallback', 'torchvision / detkit._C',
              'fallback / torchvision']
    return f'Machine: {machine()}\n\n' + markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='1k, 10k and SSD cases with fewer repeats')
    args = parser.parse_args()
    print(run(args.quick))


if __name__ == '__main__':
    main()
