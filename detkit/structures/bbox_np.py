"""NumPy box helpers for the data pipeline and the evaluation code (no torch).

The torch versions used by the models live in :mod:`detkit.structures.bbox`; these exist so that transforms
(which run in data-loader workers on numpy arrays) and ``eval_map`` avoid tensor round trips.
Boxes are ``x1, y1, x2, y2`` in pixels of whatever image the caller's boxes live in.
"""
from __future__ import annotations

import numpy as np

__all__ = ['bbox_overlaps_np', 'clip_boxes_np', 'valid_boxes_mask']


def bbox_overlaps_np(boxes1: np.ndarray, boxes2: np.ndarray, mode: str = 'iou', eps: float = 1e-6,
                     offset: float = 0.0) -> np.ndarray:
    """Pairwise IoU (or IoF) of two box sets.

    Args:
        boxes1: ``(N, 4)`` boxes ``x1, y1, x2, y2``.
        boxes2: ``(M, 4)`` boxes in the same image as ``boxes1``.
        mode: ``'iou'`` (intersection over union) or ``'iof'`` (intersection over the area of ``boxes1``).
        eps: lower bound of the denominator, so that degenerate boxes give 0 instead of NaN.
        offset: ``1.0`` reproduces the legacy VOC-devkit convention where a box spans ``x2 - x1 + 1`` pixels.

    Returns:
        ``(N, M)`` float32 array of overlaps.
    """
    if mode not in ('iou', 'iof'):
        raise ValueError(f"bbox_overlaps_np: mode must be 'iou' or 'iof', got {mode!r}")
    b1 = np.asarray(boxes1, dtype=np.float32).reshape(-1, 4)
    b2 = np.asarray(boxes2, dtype=np.float32).reshape(-1, 4)
    if b1.shape[0] == 0 or b2.shape[0] == 0:
        return np.zeros((b1.shape[0], b2.shape[0]), dtype=np.float32)
    area1 = (b1[:, 2] - b1[:, 0] + offset) * (b1[:, 3] - b1[:, 1] + offset)
    area2 = (b2[:, 2] - b2[:, 0] + offset) * (b2[:, 3] - b2[:, 1] + offset)
    iw = np.minimum(b1[:, None, 2], b2[None, :, 2]) - np.maximum(b1[:, None, 0], b2[None, :, 0]) + offset
    ih = np.minimum(b1[:, None, 3], b2[None, :, 3]) - np.maximum(b1[:, None, 1], b2[None, :, 1]) + offset
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    if mode == 'iou':
        denom = area1[:, None] + area2[None, :] - inter
    else:
        denom = np.broadcast_to(area1[:, None], inter.shape)
    return inter / np.maximum(denom, eps)


def clip_boxes_np(boxes: np.ndarray, img_shape: tuple[int, int]) -> np.ndarray:
    """Clip ``(N, 4)`` boxes in place to an image of shape ``(h, w)``; returns ``boxes``."""
    h, w = img_shape[:2]
    np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
    return boxes


def valid_boxes_mask(boxes: np.ndarray, min_size: float = 0.0) -> np.ndarray:
    """``(N,)`` bool: boxes whose width and height are both greater than ``min_size`` (and not NaN)."""
    return ((boxes[:, 2] - boxes[:, 0]) > min_size) & ((boxes[:, 3] - boxes[:, 1]) > min_size)
