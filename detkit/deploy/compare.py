"""Compare two sets of detections of one image (onnxruntime's and PyTorch's, a fast path's and eager's).

Detections whose scores differ by less than the float rounding may come out in another order, so a detection is
compared with the detection of its class and nearest box in the other set, not with the one at its rank.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np

__all__ = ['paired_differences']

Detections = Union[Sequence[Any], Mapping[str, Any]]


def _arrays(dets: Detections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(dets, Mapping):
        dets = (dets['boxes'], dets['scores'], dets['labels'])
    boxes, scores, labels = (np.asarray(d.detach().cpu() if hasattr(d, 'detach') else d) for d in dets[:3])
    return boxes.astype(np.float64).reshape(-1, 4), scores.astype(np.float64), labels


def paired_differences(ours: Detections, ref: Detections) -> tuple[float, float]:
    """The largest box and score differences between ``ours`` and ``ref`` after pairing each detection of ``ours``
    with the detection of ``ref`` of its class and nearest box (a tie on the box goes by the score).

    Args:
        ours: ``(boxes (K, 4), scores (K,), labels (K,))`` (arrays or tensors, extra items ignored) or a dict
            with those keys, as ``inference_detector`` returns.
        ref: the same, the reference.

    Returns:
        ``(max box difference in pixels, max score difference)``; ``(0.0, 0.0)`` when both are empty.

    Raises:
        ValueError: the counts differ, a detection has no reference of its class, or two detections pair with the
            same reference (the pairing must be one to one).
    """
    boxes, scores, labels = _arrays(ours)
    ref_boxes, ref_scores, ref_labels = _arrays(ref)
    if len(boxes) != len(ref_boxes):
        raise ValueError(f'{len(boxes)} detections against {len(ref_boxes)} in the reference')
    if not len(boxes):
        return 0.0, 0.0
    cost = np.abs(boxes[:, None] - ref_boxes[None]).max(-1) + np.abs(scores[:, None] - ref_scores[None]) * 1e3
    cost[labels[:, None] != ref_labels[None]] = np.inf
    pair = cost.argmin(1)
    if not np.isfinite(cost[np.arange(len(pair)), pair]).all():
        raise ValueError('a detection has no reference detection of its class')
    if len(np.unique(pair)) != len(pair):
        raise ValueError('two detections pair with the same reference detection')
    return float(np.abs(boxes - ref_boxes[pair]).max()), float(np.abs(scores - ref_scores[pair]).max())
