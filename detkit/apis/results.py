"""Detection results in exchange formats: COCO-style JSON detections and per-class arrays (mmdetection's .pkl)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from detkit.datasets import find_dataset_attr

__all__ = ['label_to_category', 'to_coco_detections', 'to_per_class_arrays']


def label_to_category(dataset: Any) -> Any:
    """A function mapping a 0-based label to the dataset's original category id.

    Uses ``dataset.label2cat`` (a dict) or ``dataset.cat_ids`` (a list indexed by label) when the dataset, or a
    dataset inside its wrappers, has one (COCO-style datasets); otherwise ``label + 1`` (COCO numbering starts at 1,
    so VOC-style datasets get ids 1..num_classes in class order).
    """
    found = find_dataset_attr(dataset, 'label2cat')
    if found and isinstance(found[0].label2cat, dict):
        mapping = found[0].label2cat
        return lambda label: mapping[int(label)]
    found = find_dataset_attr(dataset, 'cat_ids')
    if found and found[0].cat_ids is not None and len(found[0].cat_ids):
        cat_ids = list(found[0].cat_ids)
        return lambda label: cat_ids[int(label)]
    return lambda label: int(label) + 1


def to_coco_detections(predictions: Sequence[tuple[int, dict[str, Any], dict[str, np.ndarray]]],
                       dataset: Any) -> list[dict[str, Any]]:
    """COCO result records ``{image_id, category_id, bbox: [x, y, w, h], score}``.

    Args:
        predictions: ``(dataset_index, meta, pred)`` with numpy ``boxes`` (x1, y1, x2, y2, original-image pixels),
            ``scores`` and ``labels``; ``meta['img_id']`` becomes ``image_id``.
        dataset: for the label -> category id mapping (:func:`label_to_category`).
    """
    to_cat = label_to_category(dataset)
    records = []
    for idx, meta, pred in predictions:
        img_id = meta.get('img_id', idx)
        if isinstance(img_id, np.generic):
            img_id = img_id.item()
        for box, score, label in zip(pred['boxes'], pred['scores'], pred['labels']):
            x1, y1, x2, y2 = (float(v) for v in box)
            records.append(dict(image_id=img_id, category_id=to_cat(label), bbox=[x1, y1, x2 - x1, y2 - y1],
                                score=float(score)))
    return records


def to_per_class_arrays(predictions: Sequence[tuple[int, dict[str, Any], dict[str, np.ndarray]]],
                        num_classes: int) -> list[list[np.ndarray]]:
    """For each image (in the given order) a list over classes of ``(n, 5)`` float32 ``x1, y1, x2, y2, score``."""
    out = []
    for _, _, pred in predictions:
        dets = np.concatenate([pred['boxes'].reshape(-1, 4), pred['scores'].reshape(-1, 1)], 1).astype(np.float32)
        out.append([dets[pred['labels'] == c] for c in range(num_classes)])
    return out
