"""Helpers shared by the geometric transforms: the box fields of a ``results`` dict and how to keep them valid.

A ``results`` dict carries up to two box sets, each with its labels, in **current-image** pixels (the image in
``results['img']`` at that point of the pipeline):

* ``gt_bboxes`` ``(n, 4)`` float32 with ``gt_labels`` ``(n,)`` int64: boxes to learn from;
* ``gt_bboxes_ignore`` ``(k, 4)`` float32 with ``gt_labels_ignore`` ``(k,)`` int64: crowd / difficult regions.

Every geometric transform moves all present box sets, clips them to the new image and drops the boxes that
became degenerate (zero width or height) **together with their labels**, so boxes and labels always line up.

``results['orig_to_img']`` = ``(ax, bx, ay, by)`` records the axis-aligned map from original-image to
current-image coordinates (``x_cur = ax * x_orig + bx``). Resize, flip, expand and crop are all of that form;
:class:`LoadAnnotations` uses it when it runs after them (e.g. a test pipeline with Resize first).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from detkit.structures.bbox_np import clip_boxes_np, valid_boxes_mask

__all__ = ['BOX_FIELDS', 'iter_box_fields', 'keep_boxes', 'clip_and_drop', 'update_orig_to_img', 'apply_orig_to_img']

#: (box key, label key) pairs that geometric transforms keep in sync
BOX_FIELDS: tuple[tuple[str, str], ...] = (('gt_bboxes', 'gt_labels'), ('gt_bboxes_ignore', 'gt_labels_ignore'))


def iter_box_fields(results: dict) -> Iterator[tuple[str, str]]:
    """Yield the ``(box_key, label_key)`` pairs present in ``results``."""
    for box_key, label_key in BOX_FIELDS:
        if box_key in results:
            yield box_key, label_key


def keep_boxes(results: dict, box_key: str, label_key: str, keep: np.ndarray) -> None:
    """Keep the boxes (and their labels) selected by the boolean mask ``keep``."""
    if keep.all():
        return
    results[box_key] = results[box_key][keep]
    if label_key in results:
        results[label_key] = results[label_key][keep]


def clip_and_drop(results: dict, clip: bool = True) -> None:
    """Clip every box set to ``results['img_shape']`` (when ``clip``) and drop degenerate boxes with their labels.

    Boxes are modified in place; callers pass arrays they own (the transforms copy before moving boxes).
    """
    for box_key, label_key in iter_box_fields(results):
        boxes = results[box_key]
        if clip:
            clip_boxes_np(boxes, results['img_shape'])
        keep_boxes(results, box_key, label_key, valid_boxes_mask(boxes))


def update_orig_to_img(results: dict, sx: float, sy: float, tx: float, ty: float) -> None:
    """Compose the recorded original→current map with ``x' = sx * x + tx``, ``y' = sy * y + ty``."""
    ax, bx, ay, by = results.get('orig_to_img', (1.0, 0.0, 1.0, 0.0))
    results['orig_to_img'] = (sx * ax, sx * bx + tx, sy * ay, sy * by + ty)


def apply_orig_to_img(boxes: np.ndarray, orig_to_img: tuple[float, float, float, float]) -> np.ndarray:
    """Map ``(n, 4)`` original-image boxes into the current image (a new float32 array)."""
    ax, bx, ay, by = orig_to_img
    out = np.empty_like(boxes, dtype=np.float32)
    out[:, 0::2] = boxes[:, 0::2] * ax + bx
    out[:, 1::2] = boxes[:, 1::2] * ay + by
    # a mirror (negative scale) swaps which corner is the smaller one
    if ax < 0:
        out[:, [0, 2]] = out[:, [2, 0]]
    if ay < 0:
        out[:, [1, 3]] = out[:, [3, 1]]
    return out
