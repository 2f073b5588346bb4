"""NMS speed: detkit's compiled CPU kernels vs torchvision.ops vs detkit's pure-PyTorch fallback; class-aware
soft-NMS: the compiled kernel vs the fallback vs a per-class loop over ``detkit.ops.soft_nms``.

Same inputs for all, one process, medians over repeats; every result is checked equal to torchvision's (hard NMS)
or to the compiled kernel's (soft-NMS).

    python benchmarks/bench_nms.py                    # both tables (torchvision takes ~7 s per run at 50k boxes)
    python benchmarks/bench_nms.py --quick            # fewer cases and repeats
    python benchmarks/bench_nms.py --section soft     # only the soft-NMS table (or: --section nms)
    python benchmarks/bench_nms.py --threads 1        # one intra-op thread (steadier on a shared machine)

Hard NMS cases:
    random N: N boxes with corners uniform in a 1000x1000 image and sides of 1..61 px, IoU 0.5 (most are kept,
        so torchvision's all-pairs loop does ~N^2/2 IoUs);
    SSD300 post-processing: 8732 boxes shaped like SSD300's anchors in a 300x300 image with 80 random class
        scores each; the 6000 best (box, class) pairs go through class-aware NMS at IoU 0.45.

Class-aware soft-NMS cases (``batched_soft_nms``, linear unless stated, IoU 0.3, sigma 0.5, min score 1e-3):
    random N x 80 classes: the random boxes above with a uniformly random class each;
    M2Det320 post-processing: 12810 boxes shaped like M2Det320's anchors (40, 20, 10, 5, 3, 1 cells, 6 anchors
        each) in a 320x320 image with 80 random class scores each (the SSD300 case's distribution); every (box,
        class) pair scoring above 0.1 goes through class-aware soft-NMS at IoU 0.45, as M2Det's test does.
    The per-class loop is what a user would write without the op: ``soft_nms`` on each class's boxes, then one
    sort of all the kept boxes. Soft-NMS timings are interleaved (the three run in turn, see
    ``interleaved_median_times``).
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

from common import fmt_seconds, interleaved_median_times, machine, markdown_table, median_time  # noqa: E402

from detkit.ops import batched_nms, batched_soft_nms, nms, soft_nms  # noqa: E402
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


def anchor_boxes(input_size: int, levels: list[tuple[int, float, float]], ratios: list[float],
                 g: torch.Generator) -> torch.Tensor:
    """SSD-style anchors with regression jitter, clipped to the image: per level (cells, size, next size), one box
    per ratio at every cell plus a square of size sqrt(size * next size). Returns (A, 4)."""
    boxes = []
    for cells, size, next_size in levels:
        stride = input_size / cells
        c = (torch.arange(cells) + 0.5) * stride
        cy, cx = torch.meshgrid(c, c, indexing='ij')
        shapes = [(size, size), (math.sqrt(size * next_size),) * 2]
        shapes += [(size * math.sqrt(r), size / math.sqrt(r)) for r in ratios] + \
                  [(size / math.sqrt(r), size * math.sqrt(r)) for r in ratios]
        for w, h in shapes:
            jitter = torch.randn(cells * cells, 4, generator=g) * 0.1 * math.sqrt(w * h)  # regression outputs
            b = torch.stack([cx.flatten() - w / 2, cy.flatten() - h / 2, cx.flatten() + w / 2, cy.flatten() + h / 2], 1)
            boxes.append(b + jitter)
    return torch.cat(boxes).clamp(0, input_size)


def m2det320_candidates(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """M2Det320's 12810 anchors x 80 random class scores; the (box, class) pairs scoring above 0.1, as M2Det's
    test keeps them: (boxes, scores, class ids)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [25.6, 48.0, 105.6, 163.2, 220.8, 278.4, 336.0]  # M2Det320's min sizes (0.08 .. 1.05 of 320)
    levels = [(cells, sizes[i], sizes[i + 1]) for i, cells in enumerate((40, 20, 10, 5, 3, 1))]
    boxes = anchor_boxes(320, levels, ratios=[2, 3], g=g)  # 6 anchors per cell
    assert boxes.shape[0] == 12810
    scores = torch.softmax(torch.randn(12810, 81, generator=g) * 3, 1)[:, :80]  # (12810, 80)
    anchor, cls = (scores > 0.1).nonzero(as_tuple=True)
    return boxes[anchor], scores[anchor, cls], cls


def soft_nms_per_class(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float,
                       method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The user's alternative to batched_soft_nms: soft_nms on each class's boxes, then one sort over all classes
    (by decayed score, equal scores by index, as batched_soft_nms orders them)."""
    all_dets, all_keep = [], []
    for c in torch.unique(idxs):
        members = (idxs == c).nonzero().squeeze(1)
        dets, keep = soft_nms(boxes[members], scores[members], iou_threshold, method=method)
        all_dets.append(dets)
        all_keep.append(members[keep])
    dets, keep = torch.cat(all_dets), torch.cat(all_keep)
    by_index = torch.argsort(keep)
    dets, keep = dets[by_index], keep[by_index]
    order = torch.sort(dets[:, 4], descending=True, stable=True)[1]
    return dets[order], keep[order]


def run_soft(quick: bool) -> str:
    assert has_kernel('batched_soft_nms', 'cpu'), 'detkit._C is not built: run `make install` first'
    g = torch.Generator().manual_seed(1)
    cases = []
    for n in ([1000] if quick else [1000, 5000]):
        boxes, scores = random_boxes(n)
        cases.append((f'{n:,} random boxes x 80 classes', boxes, scores, torch.randint(0, 80, (n,), generator=g),
                      0.3, 'linear'))
    boxes, scores, labels = m2det320_candidates()
    m2det = f'M2Det320: the {len(scores):,} of 12,810x80 scores > 0.1'
    cases.append((m2det, boxes, scores, labels, 0.45, 'linear'))
    if not quick:
        cases.append((m2det + ', gaussian', boxes, scores, labels, 0.45, 'gaussian'))
    rows = []
    for name, boxes, scores, labels, thr, method in cases:
        def compiled():
            return batched_soft_nms(boxes, scores, labels, thr, method=method)

        def loop():
            return soft_nms_per_class(boxes, scores, labels, thr, method)

        def fallback():
            return nms_fallback.batched_soft_nms_torch(boxes, scores, labels, thr, 0.5, 1e-3, method)

        dets, keep = compiled()
        for other in (loop(), fallback()):
            assert torch.equal(other[1], keep) and torch.equal(other[0], dets), name
        reps = 3 if quick else (5 if len(scores) > 10_000 else 15)
        t_c, t_loop, t_fb = interleaved_median_times([compiled, loop, fallback], reps)
        per_class = torch.bincount(labels).max()
        rows.append([f'{name} ({len(keep):,} kept, <= {per_class:,} per class)', fmt_seconds(t_c),
                     fmt_seconds(t_loop), fmt_seconds(t_fb), f'{t_loop / t_c:.1f}x', f'{t_fb / t_c:.1f}x'])
    header = ['batched_soft_nms case', 'detkit._C (CPU)', 'per-class soft_nms loop', 'detkit fallback',
              'loop / detkit._C', 'fallback / detkit._C']
    return markdown_table(header, rows)


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
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='fewer cases (no 50k, no 5k soft-NMS) and repeats')
    parser.add_argument('--section', choices=('all', 'nms', 'soft'), default='all',
                        help='hard NMS (nms, batched_nms), class-aware soft-NMS (batched_soft_nms), or both')
    parser.add_argument('--threads', type=int, default=None,
                        help="torch's intra-op threads (default: torch's own; 1 is steadier on a shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'Machine: {machine()}, load average {os.getloadavg()[0]:.1f} at the start\n')
    if args.section in ('all', 'nms'):
        print(run(args.quick) + '\n')
    if args.section in ('all', 'soft'):
        print(run_soft(args.quick))


if __name__ == '__main__':
    main()
