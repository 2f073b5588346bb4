"""Axis-aligned box utilities: overlaps (IoU / IoF) and format conversions.

Every box here is ``x1, y1, x2, y2`` in pixels (no ``+1``: a box from 0 to 10 is 10 wide), in whichever image the
caller's boxes live in; these functions only compare or convert boxes, so both arguments must live in the same
image.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ['bbox_overlaps', 'bbox_xyxy_to_cxcywh', 'bbox_cxcywh_to_xyxy', 'bbox_area']

_MODES = ('iou', 'iof', 'giou')


def bbox_area(boxes: Tensor) -> Tensor:
    """Areas of ``Tensor[..., 4]`` boxes, ``Tensor[...]``; degenerate boxes (x2 < x1) count as 0."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def bbox_overlaps(bboxes1: Tensor, bboxes2: Tensor, mode: str = 'iou', is_aligned: bool = False,
                  eps: float = 1e-6) -> Tensor:
    """Overlaps between two sets of boxes.

    ``iou`` is intersection over union; ``iof`` is intersection over the area of the box from ``bboxes1``
    ("foreground"), which is how an anchor is tested against an ignore region: an anchor fully inside a crowd box
    has IoF 1 whatever the crowd box's size. ``giou`` is the generalised IoU of Rezatofighi et al. (CVPR 2019),
    ``iou - (enclose - union) / enclose`` with ``enclose`` the area of the smallest box holding both, in
    ``[-1, 1]``: unlike IoU it still ranks disjoint boxes by how far apart they are (the GIoU loss needs that).

    Args:
        bboxes1: ``Tensor[..., M, 4]``.
        bboxes2: ``Tensor[..., N, 4]`` (``Tensor[..., M, 4]`` when ``is_aligned``); leading batch dimensions must
            match ``bboxes1``'s.
        mode: ``'iou'``, ``'iof'`` or ``'giou'``.
        is_aligned: compare ``bboxes1[i]`` with ``bboxes2[i]`` only, giving ``Tensor[..., M]`` instead of the
            full ``Tensor[..., M, N]`` matrix.
        eps: added to the denominator so that two empty boxes give 0, not NaN.

    Returns:
        ``Tensor[..., M, N]`` (or ``Tensor[..., M]`` when ``is_aligned``) in ``[0, 1]`` (``[-1, 1]`` for
        ``giou``).

    Raises:
        ValueError: naming the argument, for an unknown ``mode``, boxes that are not ``(..., 4)`` or sets of
            different lengths when ``is_aligned``.
    """
    if mode not in _MODES:
        raise ValueError(f'mode must be one of {_MODES}, got {mode!r}')
    for name, boxes in (('bboxes1', bboxes1), ('bboxes2', bboxes2)):
        if not isinstance(boxes, Tensor) or boxes.dim() < 2 or boxes.shape[-1] != 4:
            shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
            raise ValueError(f'{name} must be a tensor of shape (..., N, 4) (x1, y1, x2, y2), got {shape}')
    if bboxes1.shape[:-2] != bboxes2.shape[:-2]:
        raise ValueError(f'bboxes1 and bboxes2 must have the same batch dimensions, got '
                         f'{tuple(bboxes1.shape[:-2])} and {tuple(bboxes2.shape[:-2])}')
    if is_aligned and bboxes1.shape[-2] != bboxes2.shape[-2]:
        raise ValueError(f'is_aligned needs as many bboxes1 as bboxes2, got {bboxes1.shape[-2]} and '
                         f'{bboxes2.shape[-2]}')

    area1 = bbox_area(bboxes1)  # (..., M)
    area2 = bbox_area(bboxes2)  # (..., N)
    if is_aligned:
        lt = torch.max(bboxes1[..., :2], bboxes2[..., :2])  # (..., M, 2)
        rb = torch.min(bboxes1[..., 2:], bboxes2[..., 2:])
        wh = (rb - lt).clamp(min=0)
        inter = wh[..., 0] * wh[..., 1]  # (..., M)
        denom = area1 + area2 - inter if mode != 'iof' else area1
        if mode == 'giou':
            enclose_wh = (torch.max(bboxes1[..., 2:], bboxes2[..., 2:])
                          - torch.min(bboxes1[..., :2], bboxes2[..., :2])).clamp(min=0)
    else:
        lt = torch.max(bboxes1[..., :, None, :2], bboxes2[..., None, :, :2])  # (..., M, N, 2)
        rb = torch.min(bboxes1[..., :, None, 2:], bboxes2[..., None, :, 2:])
        wh = (rb - lt).clamp(min=0)
        inter = wh[..., 0] * wh[..., 1]  # (..., M, N)
        denom = area1[..., :, None] + area2[..., None, :] - inter if mode != 'iof' else area1[..., :, None]
        if mode == 'giou':
            enclose_wh = (torch.max(bboxes1[..., :, None, 2:], bboxes2[..., None, :, 2:])
                          - torch.min(bboxes1[..., :, None, :2], bboxes2[..., None, :, :2])).clamp(min=0)
    denom = denom.clamp(min=eps)
    ious = inter / denom
    if mode != 'giou':
        return ious
    enclose = (enclose_wh[..., 0] * enclose_wh[..., 1]).clamp(min=eps)
    return ious - (enclose - denom) / enclose


def bbox_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``Tensor[..., 4]`` ``x1, y1, x2, y2`` to ``cx, cy, w, h``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1), dim=-1)


def bbox_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``Tensor[..., 4]`` ``cx, cy, w, h`` to ``x1, y1, x2, y2``."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)
