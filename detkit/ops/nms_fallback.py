"""Pure-PyTorch NMS: the fallback used when ``detkit._C`` is not built, and an oracle in tests.

Every function here returns exactly what the compiled kernels return (the same IoU arithmetic in the boxes'
dtype, the same tie-breaking), and runs on any device. Arguments are assumed valid: the checks live in
:mod:`detkit.ops.nms`.

Hard NMS is vectorised without a Python loop over box pairs, in two steps: (1) find every pair of boxes of one
class whose IoU is above the threshold, comparing only tiles of boxes that can overlap in x (as the compiled
kernel's sweep does); (2) resolve greedy NMS over those suppression edges by a fixed-point iteration on chunks of
score ranks (see :func:`_resolve_greedy`). Class-aware soft-NMS advances every class at once: one round selects
the best box of each class and decays that class's boxes (see :func:`batched_soft_nms_torch`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ['nms_torch', 'batched_nms_torch', 'soft_nms_torch', 'batched_soft_nms_torch', 'threshold_as',
           'pairwise_iou', 'exp_nonpositive']


def threshold_as(iou_threshold: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The largest value of ``dtype`` not above ``iou_threshold``.

    For x in ``dtype``, ``x > iou_threshold`` (compared in float64, as torchvision does) holds exactly when
    ``x > threshold_as(...)``; a plain cast could round the threshold up and flip a decision.
    """
    t = torch.tensor(iou_threshold, dtype=dtype, device=device)
    if float(t) > iou_threshold:
        t = torch.nextafter(t, torch.tensor(float('-inf'), dtype=dtype, device=device))
    return t


def pairwise_iou(a: Tensor, a_area: Tensor, b: Tensor, b_area: Tensor) -> Tensor:
    """IoU of every box in ``a`` (P, 4) with every box in ``b`` (Q, 4), both x1, y1, x2, y2 in one image.

    Uses the kernels' arithmetic (areas passed in, ``inter / (area_a + area_b - inter)``). Returns (P, Q).
    """
    a, b = a.t().contiguous(), b.t().contiguous()  # (4, P), (4, Q): contiguous rows broadcast fast
    w = torch.minimum(a[2, :, None], b[2, None, :]).sub_(torch.maximum(a[0, :, None], b[0, None, :])).clamp_(min=0)
    h = torch.minimum(a[3, :, None], b[3, None, :]).sub_(torch.maximum(a[1, :, None], b[1, None, :])).clamp_(min=0)
    inter = w.mul_(h)  # (P, Q)
    union = torch.add(a_area[:, None], b_area[None, :]).sub_(inter)
    return inter.div_(union)


def _areas(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _suppression_edges(b: Tensor, area: Tensor, cls: Tensor, thr: Tensor, full_scan: bool, tile: int,
                       max_pairs: int) -> tuple[Tensor, Tensor]:
    """All pairs of boxes (in score-rank space) whose IoU is above ``thr`` within one class.

    Boxes are sorted by (class, x1) and cut into tiles of ``tile`` boxes. Tile ``b`` after tile ``a`` only needs
    comparing when its first box has the class of ``a``'s last box and starts left of the largest x2 among
    ``a``'s boxes of that class: otherwise every pair differs in class or has an intersection width <= 0, whose
    IoU (0 or NaN) can never exceed a threshold >= 0. The test is exact, so it changes no decision.

    Returns ``(src, dst)`` int64 ranks with ``src < dst``: box ``src`` would suppress box ``dst`` if kept.
    """
    n = b.shape[0]
    dev = b.device
    ranks = torch.arange(n, device=dev)
    # lexicographic (class, x1) order with two stable sorts
    by_x = torch.sort(b[:, 0], stable=True)[1]
    pos = by_x[torch.sort(cls[by_x], stable=True)[1]]  # position -> rank
    sb, sarea, scls, srank = b[pos], area[pos], cls[pos], ranks[pos]
    starts = torch.arange(0, n, tile, device=dev)
    num_tiles = starts.shape[0]
    first_cls, first_x1 = scls[starts], sb[starts, 0]
    # per tile: class of its last box, and the largest x2 among its boxes of that class
    last_cls = scls[torch.clamp(starts + tile, max=n) - 1]
    tile_of = torch.arange(n, device=dev) // tile
    in_last = scls == last_cls[tile_of]
    x2_last = torch.full((num_tiles,), float('-inf'), dtype=b.dtype, device=dev)
    x2_last = x2_last.scatter_reduce(0, tile_of[in_last], sb[in_last, 2], reduce='amax')
    src_all, dst_all = [], []
    for a in range(num_tiles):
        a0, a1 = a * tile, min(n, (a + 1) * tile)
        if full_scan:
            hi = num_tiles
        else:
            later = (first_cls[a + 1:] == last_cls[a]) & (first_x1[a + 1:] < x2_last[a])
            # the tiles to compare form a prefix of the later tiles (both keys are sorted)
            hi = a + 1 + int(torch.cumprod(later.to(torch.int8), 0).sum()) if later.numel() else a + 1
        c1 = min(n, hi * tile)
        step = max(1, max_pairs // (a1 - a0))
        for c0 in range(a0, c1, step):
            ce = min(c1, c0 + step)
            iou = pairwise_iou(sb[a0:a1], sarea[a0:a1], sb[c0:ce], sarea[c0:ce])  # (rows, cols)
            hit = (iou > thr) & (scls[a0:a1, None] == scls[None, c0:ce])
            if c0 < a1:  # the block overlaps the row tile itself: keep each pair once, never a box with itself
                hit &= torch.arange(a0, a1, device=dev)[:, None] < torch.arange(c0, ce, device=dev)[None, :]
            i, j = hit.nonzero(as_tuple=True)
            if i.numel():
                ri, rj = srank[i + a0], srank[j + c0]
                src_all.append(torch.minimum(ri, rj))
                dst_all.append(torch.maximum(ri, rj))
    if not src_all:
        empty = torch.empty(0, dtype=torch.long, device=dev)
        return empty, empty
    return torch.cat(src_all), torch.cat(dst_all)


def _resolve_greedy(n: int, src: Tensor, dst: Tensor, chunk: int) -> Tensor:
    """Greedy NMS decisions over suppression edges ``src -> dst`` (ranks, ``src < dst``). Returns keep (n,) bool.

    Ranks are resolved in chunks. Edges from earlier chunks are final; inside a chunk,
    ``keep[j] = alive[j] and not any(keep[i] for edges i -> j)`` is iterated to its fixed point. Entry j depends
    only on entries before it, so after t rounds the first t entries are final, and the unique fixed point is the
    greedy answer; it is usually reached in a few rounds.
    """
    keep = torch.ones(n, dtype=torch.bool, device=src.device)
    if src.numel() == 0:
        return keep
    order = torch.argsort(dst)
    src, dst = src[order], dst[order]
    bounds = torch.searchsorted(dst, torch.arange(0, n + chunk, chunk, device=dst.device)).tolist()
    for k, c0 in enumerate(range(0, n, chunk)):
        e0, e1 = bounds[k], bounds[k + 1]
        if e0 == e1:
            continue
        c1 = min(n, c0 + chunk)
        s, d = src[e0:e1], dst[e0:e1] - c0
        outside = s < c0
        alive = torch.ones(c1 - c0, dtype=torch.bool, device=src.device)
        alive[d[outside & keep[s]]] = False  # suppressed by a box kept in an earlier chunk
        s_in, d_in = s[~outside] - c0, d[~outside]
        cur = alive
        while True:
            sup = torch.zeros_like(alive)
            sup[d_in[cur[s_in]]] = True
            new = alive & ~sup
            if torch.equal(new, cur):
                break
            cur = new
        keep[c0:c1] = cur
    return keep


def _greedy(boxes: Tensor, scores: Tensor, idxs: Tensor | None, iou_threshold: float, tile: int = 256,
            chunk: int = 4096, max_pairs: int = 1 << 22) -> Tensor:
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    thr = threshold_as(iou_threshold, boxes.dtype, boxes.device)
    full_scan = not iou_threshold >= 0  # a negative threshold suppresses even disjoint boxes
    order = torch.sort(scores, descending=True, stable=True)[1]  # rank -> index; NaN scores first
    b = boxes[order]
    area = _areas(b)
    cls = idxs[order] if idxs is not None else torch.zeros(n, dtype=torch.long, device=boxes.device)
    # Boxes with a NaN area have a NaN IoU with every box: always kept, never suppress. Leave them out.
    valid = (~torch.isnan(area)).nonzero().squeeze(1)
    src, dst = _suppression_edges(b[valid], area[valid], cls[valid], thr, full_scan, tile, max_pairs)
    keep = _resolve_greedy(n, valid[src], valid[dst], chunk)
    return order[keep]


def nms_torch(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS. ``boxes`` (N, 4) float, ``scores`` (N,) of the same dtype. Returns kept indices (int64),
    by descending score."""
    return _greedy(boxes, scores, None, iou_threshold)


def batched_nms_torch(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS: only boxes with equal ``idxs`` suppress each other. Returns kept indices by score."""
    return _greedy(boxes, scores, idxs.long(), iou_threshold)


# exp_nonpositive's constants per dtype: (low, round, scale, Taylor degree, ln2_hi, ln2_lo, integer dtype of the
# bits, exponent bias, mantissa bits). The same values as ExpConstants in csrc/cpu/soft_nms_kernel.cpp.
_EXP_CONSTANTS = {
    torch.float32: (-104.0, 12582912.0, 64, 7, 0.693145751953125, 1.4286068202862176e-06, torch.int32, 127, 23),
    torch.float64: (-746.0, 6755399441055744.0, 600, 13, 6.93147180369123816490e-01, 1.90821492927058770002e-10,
                    torch.int64, 1023, 52),
}


def exp_nonpositive(x: Tensor) -> Tensor:
    """``exp(x)`` for ``x <= 0``, float32 or float64, bit for bit as the compiled soft-NMS kernel computes it.

    ``torch.exp`` (MKL on the CPU, CUDA's on a GPU) and ``std::exp`` round differently in the last bit for 1-5% of
    inputs, and soft-NMS decisions depend on those bits. This exp uses only IEEE ``+``, ``-``, ``*`` and exact
    powers of two, in the kernel's order, so every backend gets the same bits: ``x = k ln2 + r`` with ``k`` the
    integer nearest ``x / ln2`` (ties to even, by adding and subtracting ``1.5 * 2**mantissa``), a Taylor
    polynomial in ``r`` by Horner's rule, then ``* 2**k`` (as ``2**(k + scale) * 2**-scale`` so that both
    factors are normal numbers). Within 1.2 ulp of the exact value in float32, 1 ulp in float64. Below ``low``
    (-104 in float32, -746 in float64; exp underflows to 0 there) it returns ``exp(low)``; so does a NaN.
    """
    low, round_, scale, degree, ln2_hi, ln2_lo, bits, bias, mantissa = _EXP_CONSTANTS[x.dtype]

    def const(value: float) -> Tensor:  # rounded from the double value, as the kernel's static_cast
        return torch.tensor(value, dtype=x.dtype, device=x.device)

    def two_to(e: Tensor) -> Tensor:  # 2**e for integer e in the normal range, built from its bits
        return ((e + bias) << mantissa).view(x.dtype)

    x = torch.where(x >= const(low), x, const(low))
    k = (x * const(1.4426950408889634) + const(round_)) - const(round_)  # x / ln 2, to an integer
    r = (x - k * const(ln2_hi)) - k * const(ln2_lo)
    p = const(1 / math.factorial(degree))
    for d in range(degree - 1, -1, -1):
        p = p * r + const(1 / math.factorial(d))
    e = k.to(bits)
    return (p * two_to(e + scale)) * two_to(torch.full_like(e, -scale))


def _soft_weight(iou: Tensor, thr: Tensor, sigma: float, method: str) -> Tensor:
    """The factor soft-NMS multiplies a score by, given its box's IoU with the selected box; 1 leaves it as is.

    The compiled kernel's rule, case for case: ``linear`` decays when ``iou > thr``; ``gaussian`` by
    ``exp(-iou**2 / sigma)`` computed with :func:`exp_nonpositive`, where a disjoint box and a NaN IoU (which
    never decays) get ``exp(0) = 1``.
    """
    if method == 'linear':
        return torch.where(iou > thr, 1 - iou, torch.ones_like(iou))
    exponent = -(iou * iou) / torch.tensor(sigma, dtype=iou.dtype, device=iou.device)
    return exp_nonpositive(torch.where(iou > 0, exponent, torch.zeros_like(exponent)))


def soft_nms_torch(boxes: Tensor, scores: Tensor, iou_threshold: float, sigma: float, min_score: float,
                   method: str) -> tuple[Tensor, Tensor]:
    """Soft-NMS with the semantics of the compiled kernel (see :func:`detkit.ops.soft_nms`).

    One step per selected box, each vectorised over the remaining boxes. Returns ``(dets (K, 5), keep (K,))``,
    in selection order.
    """
    s = scores.clone()
    area = _areas(boxes)
    alive = ~(s.double() < min_score)  # compared in float64 like the kernel; NaN scores stay
    thr = threshold_as(iou_threshold, boxes.dtype, boxes.device)
    keep: list[int] = []
    kept_scores: list[Tensor] = []
    while bool(alive.any()):
        cand = alive.nonzero().squeeze(1)
        cs = s[cand]
        nan = torch.isnan(cs)
        # highest score first, NaN counting as the highest; ties: the lowest index (argmax returns the first)
        best = cand[nan.nonzero()[0, 0]] if bool(nan.any()) else cand[torch.argmax(cs)]
        i = int(best)
        keep.append(i)
        kept_scores.append(s[i].clone())
        alive[i] = False
        rest = alive.nonzero().squeeze(1)
        if rest.numel() == 0:
            break
        iou = pairwise_iou(boxes[i:i + 1], area[i:i + 1], boxes[rest], area[rest])[0]
        s[rest] = s[rest] * _soft_weight(iou, thr, sigma, method)
        alive[rest] = ~(s[rest].double() < min_score)
    keep_t = torch.tensor(keep, dtype=torch.long, device=boxes.device)
    dets = torch.cat([boxes[keep_t], torch.stack(kept_scores)[:, None] if keep else s.new_empty((0, 1))], dim=1)
    return dets, keep_t


def batched_soft_nms_torch(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, sigma: float,
                           min_score: float, method: str) -> tuple[Tensor, Tensor]:
    """Class-aware soft-NMS with the semantics of the compiled kernel (see :func:`detkit.ops.batched_soft_nms`).

    All classes advance together, without a loop over classes. The boxes are laid out grouped by class, in
    ascending input index within a class, and each round, vectorised over the alive boxes of every class:

    1. selects the best alive box of every class (NaN scores first, then the highest score, then the lowest
       index: the first candidate in the layout) with two scatter reductions;
    2. decays every alive box by its IoU with its own class's selected box;
    3. drops the selected boxes and the boxes now below ``min_score``.

    Rounds: the largest number of boxes one class keeps. The kept boxes are then sorted by decayed score with a
    stable sort over ascending input index: NaN first, equal scores by ascending index.

    Returns ``(dets (K, 5), keep (K,))``.
    """
    n = boxes.shape[0]
    dev = boxes.device
    order = torch.sort(idxs, stable=True)[1]  # layout position -> input index; by class, then by index
    cls = torch.unique_consecutive(idxs[order], return_inverse=True)[1]  # (n,) dense class id per position
    num_classes = int(cls[-1]) + 1 if n else 0
    b = boxes[order].t().contiguous()  # (4, n): x1, y1, x2, y2 rows, contiguous for the gathers
    area = (b[2] - b[0]) * (b[3] - b[1])  # the kernel's arithmetic
    s = scores[order]
    thr = threshold_as(iou_threshold, boxes.dtype, dev)
    kept = torch.zeros(n, dtype=torch.bool, device=dev)  # by layout position
    kept_score = torch.empty_like(s)
    # positions of the boxes still in play, increasing: grouped by class, ascending input index within a class
    alive = (~(s.double() < min_score)).nonzero().squeeze(1)  # compared in float64 like the kernel
    while alive.numel():
        a_cls, a_s = cls[alive], s[alive]
        # 1. per class: whether it holds a NaN score, its highest other score, then the first box that has it
        nan = torch.isnan(a_s)
        has_nan = torch.zeros(num_classes, dtype=torch.bool, device=dev)
        has_nan[a_cls[nan]] = True
        top = torch.full((num_classes,), float('-inf'), dtype=s.dtype, device=dev)
        top = top.scatter_reduce(0, a_cls, a_s.masked_fill(nan, float('-inf')), reduce='amax')
        is_best = torch.where(has_nan[a_cls], nan, a_s == top[a_cls])
        best = torch.full((num_classes,), n, dtype=torch.long, device=dev)
        best = best.scatter_reduce(0, a_cls[is_best], alive[is_best], reduce='amin')  # (C,), n: no box left
        chosen = best[best < n]
        kept[chosen] = True
        kept_score[chosen] = s[chosen]
        # 2. IoU of each alive box with its class's selected box (a = selected, b = alive: pairwise_iou's order)
        sel = best[a_cls]
        xx1 = torch.maximum(b[0, sel], b[0, alive])
        yy1 = torch.maximum(b[1, sel], b[1, alive])
        w = torch.minimum(b[2, sel], b[2, alive]).sub_(xx1).clamp_(min=0)
        h = torch.minimum(b[3, sel], b[3, alive]).sub_(yy1).clamp_(min=0)
        inter = w.mul_(h)
        iou = inter / (area[sel] + area[alive] - inter)
        new_s = a_s * _soft_weight(iou, thr, sigma, method)
        # 3. drop the selected boxes and those below min_score; the survivors keep their layout order
        stay = (alive != sel) & ~(new_s.double() < min_score)
        alive = alive[stay]
        s[alive] = new_s[stay]
    pos = kept.nonzero().squeeze(1)
    index = order[pos]  # input indices of the kept boxes
    by_index = torch.argsort(index)
    index, score = index[by_index], kept_score[pos[by_index]]
    rank = torch.sort(score, descending=True, stable=True)[1]  # NaN first; ties keep ascending index
    keep = index[rank]
    return torch.cat([boxes[keep], score[rank, None]], dim=1), keep
