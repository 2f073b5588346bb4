"""Pure-PyTorch NMS: the fallback used when ``detkit._C`` is not built, and an oracle in tests.

Every function here returns exactly what the compiled kernels return (the same IoU arithmetic in the boxes'
dtype, the same tie-breaking), and runs on any device. Arguments are assumed valid: the checks live in
:mod:`detkit.ops.nms`.

Hard NMS is vectorised without a Python loop over box pairs: boxes are visited in score order in chunks of
``chunk`` boxes. A chunk is first filtered against every box already kept (one IoU matrix), then resolved inside
itself by iterating ``keep[j] = alive[j] and not any(keep[i] and M[i, j] for i < j)`` to its fixed point. Entry j
only depends on entries before it, so after t rounds the first t entries are final, and the unique fixed point is
exactly the greedy answer; it is usually reached in a few rounds.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ['nms_torch', 'batched_nms_torch', 'soft_nms_torch', 'threshold_as', 'pairwise_iou']


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
    xx1 = torch.maximum(a[:, None, 0], b[None, :, 0])
    yy1 = torch.maximum(a[:, None, 1], b[None, :, 1])
    xx2 = torch.minimum(a[:, None, 2], b[None, :, 2])
    yy2 = torch.minimum(a[:, None, 3], b[None, :, 3])
    inter = (xx2 - xx1).clamp_(min=0) * (yy2 - yy1).clamp_(min=0)  # (P, Q)
    return inter / (a_area[:, None] + b_area[None, :] - inter)


def _areas(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _greedy(boxes: Tensor, scores: Tensor, idxs: Tensor | None, iou_threshold: float, chunk: int = 256,
            max_pairs: int = 1 << 23) -> Tensor:
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    thr = threshold_as(iou_threshold, boxes.dtype, boxes.device)
    order = torch.sort(scores, descending=True, stable=True)[1]
    b = boxes[order]
    area = _areas(b)
    cls = idxs[order] if idxs is not None else None
    kept: list[Tensor] = []  # positions in score order
    kept_boxes = b.new_empty((0, 4))
    kept_area = b.new_empty((0,))
    kept_cls = cls.new_empty((0,)) if cls is not None else None
    for start in range(0, n, chunk):
        cb, carea = b[start:start + chunk], area[start:start + chunk]
        ccls = cls[start:start + chunk] if cls is not None else None
        m = cb.shape[0]
        alive = torch.ones(m, dtype=torch.bool, device=b.device)
        # 1. suppression by the boxes kept in earlier chunks, in slices that bound the IoU matrix's memory
        step = max(1, max_pairs // m)
        for k0 in range(0, kept_boxes.shape[0], step):
            sup = pairwise_iou(kept_boxes[k0:k0 + step], kept_area[k0:k0 + step], cb, carea) > thr
            if ccls is not None:
                sup &= kept_cls[k0:k0 + step, None] == ccls[None, :]
            alive &= ~sup.any(0)
        # 2. greedy inside the chunk: M[i, j] = box i (earlier) would suppress box j
        mat = (pairwise_iou(cb, carea, cb, carea) > thr).triu_(diagonal=1)
        if ccls is not None:
            mat &= ccls[:, None] == ccls[None, :]
        keep = alive
        while True:
            new_keep = alive & ~(keep[:, None] & mat).any(0)
            if torch.equal(new_keep, keep):
                break
            keep = new_keep
        pos = keep.nonzero().squeeze(1)
        kept.append(pos + start)
        kept_boxes = torch.cat([kept_boxes, cb[pos]])
        kept_area = torch.cat([kept_area, carea[pos]])
        if kept_cls is not None:
            kept_cls = torch.cat([kept_cls, ccls[pos]])
    return order[torch.cat(kept)]


def nms_torch(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS. ``boxes`` (N, 4) float, ``scores`` (N,) of the same dtype. Returns kept indices (int64),
    by descending score."""
    return _greedy(boxes, scores, None, iou_threshold)


def batched_nms_torch(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS: only boxes with equal ``idxs`` suppress each other. Returns kept indices by score."""
    return _greedy(boxes, scores, idxs.long(), iou_threshold)


def soft_nms_torch(boxes: Tensor, scores: Tensor, iou_threshold: float, sigma: float, min_score: float,
                   method: str) -> tuple[Tensor, Tensor]:
    """Soft-NMS with the semantics of the compiled kernel (see :func:`detkit.ops.soft_nms`).

    One step per selected box, each vectorised over the remaining boxes. Returns ``(dets (K, 5), keep (K,))``.
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
        if method == 'linear':
            weight = torch.where(iou > thr, 1 - iou, torch.ones_like(iou))
        else:
            weight = torch.exp(-(iou * iou) / torch.tensor(sigma, dtype=iou.dtype, device=iou.device))
        weight = torch.where(torch.isnan(iou), torch.ones_like(weight), weight)
        s[rest] = s[rest] * weight
        alive[rest] = ~(s[rest].double() < min_score)
    keep_t = torch.tensor(keep, dtype=torch.long, device=boxes.device)
    dets = torch.cat([boxes[keep_t], torch.stack(kept_scores)[:, None] if keep else s.new_empty((0, 1))], dim=1)
    return dets, keep_t
