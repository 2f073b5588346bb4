"""Pascal-VOC style mean average precision (``eval_map``), vectorised over images.

Semantics are mmdetection's ``eval_map`` (itself the VOC devkit's): per class, detections are taken in
descending score order; a detection matches the ground-truth box (of the same image and class) it overlaps
most; it is a true positive if that IoU is ``>= iou_thr`` and the box was not matched before by a
higher-scored detection, a false positive otherwise (a repeat match is a false positive, the detection does
NOT fall back to its second-best box). Detections whose best box is an ignored box (difficult / crowd) count
as neither, so ignored boxes neither help nor hurt. Classes without ground truth are left out of the mean.

The matching is vectorised: the best box of a detection does not depend on the matching state, so "first
detection in score order per box" is one ``unique`` over all detections of a class at once.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np
from terminaltables import AsciiTable

__all__ = ['eval_map', 'average_precision', 'print_map_summary']

_EPS32 = np.finfo(np.float32).eps
# the 11 recall thresholds exactly as py-faster-rcnn / mmdetection compute them (np.arange, so 0.3, 0.6 and 0.7
# are a hair above their decimal value: a recall of exactly 0.7 does not reach the "0.7" threshold there)
_ELEVEN_POINTS = np.arange(0, 1 + 1e-3, 0.1)


def average_precision(recalls: np.ndarray, precisions: np.ndarray, mode: str = 'area') -> np.ndarray | float:
    """Average precision from a precision/recall curve.

    Args:
        recalls: ``(n,)`` or ``(s, n)`` non-decreasing recalls (detections in score order).
        precisions: same shape.
        mode: ``'area'``: area under the monotone (running-max from the right) precision envelope (VOC2010+);
            ``'11points'``: mean of the best precision at recall >= 0, 0.1, ..., 1 (VOC2007).

    Returns:
        A float for 1-d input, else an ``(s,)`` array.
    """
    if mode not in ('area', '11points'):
        raise ValueError(f"average_precision: mode must be 'area' or '11points', got {mode!r}")
    recalls = np.asarray(recalls, dtype=np.float64)
    precisions = np.asarray(precisions, dtype=np.float64)
    squeeze = recalls.ndim == 1
    recalls, precisions = np.atleast_2d(recalls), np.atleast_2d(precisions)
    s, n = recalls.shape
    if mode == 'area':
        mrec = np.hstack([np.zeros((s, 1)), recalls, np.ones((s, 1))])
        mpre = np.hstack([np.zeros((s, 1)), precisions, np.zeros((s, 1))])
        mpre = np.maximum.accumulate(mpre[:, ::-1], axis=1)[:, ::-1]
        ap = np.zeros(s)
        for i in range(s):
            ind = np.flatnonzero(mrec[i, 1:] != mrec[i, :-1])
            ap[i] = np.sum((mrec[i, ind + 1] - mrec[i, ind]) * mpre[i, ind + 1])
    else:
        ap = np.zeros(s)
        if n:
            # best precision at recall >= t == suffix max of precision from the first index with recall >= t
            suffix_max = np.maximum.accumulate(precisions[:, ::-1], axis=1)[:, ::-1]
            suffix_max = np.hstack([suffix_max, np.zeros((s, 1))])  # index n: no recall reaches t
            for i in range(s):
                first = np.searchsorted(recalls[i], _ELEVEN_POINTS, side='left')
                ap[i] = suffix_max[i, first].sum() / 11
    return float(ap[0]) if squeeze else ap


def _pair_ious(a: np.ndarray, b: np.ndarray, offset: float) -> np.ndarray:
    """Element-wise IoU of ``(P, 4)`` boxes ``a[p]`` and ``b[p]``, float32 as the reference computes it."""
    area_a = (a[:, 2] - a[:, 0] + offset) * (a[:, 3] - a[:, 1] + offset)
    area_b = (b[:, 2] - b[:, 0] + offset) * (b[:, 3] - b[:, 1] + offset)
    iw = np.maximum(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + offset, 0)
    ih = np.maximum(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + offset, 0)
    inter = iw * ih
    return inter / np.maximum(area_a + area_b - inter, _EPS32)


def _match_class(dets: np.ndarray, det_img: np.ndarray, gts: np.ndarray, gt_img: np.ndarray, gt_ignore: np.ndarray,
                 num_imgs: int, iou_thr: float, offset: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP/FP flags of one class's detections.

    Args:
        dets: ``(D, 5)`` float32 ``x1, y1, x2, y2, score``, grouped by image (``det_img`` non-decreasing).
        det_img: ``(D,)`` image index of each detection.
        gts: ``(G, 4)`` float32 ground truth of this class, grouped by image, each image's non-ignored boxes
            before its ignored ones (the order the reference stacks them in, which decides IoU ties).
        gt_img: ``(G,)`` image index of each box.
        gt_ignore: ``(G,)`` bool, ignored boxes.

    Returns:
        ``(tp, fp, order)``: float32 ``(D,)`` flags and the stable descending-score order of the detections.
    """
    d = len(dets)
    order = np.argsort(-dets[:, 4], kind='stable')
    tp = np.zeros(d, np.float32)
    fp = np.ones(d, np.float32)  # unmatched detections (also: images without boxes) are false positives
    if d == 0 or len(gts) == 0:
        return tp, fp, order
    gt_counts = np.bincount(gt_img, minlength=num_imgs)
    gt_starts = np.cumsum(gt_counts) - gt_counts
    # every (detection, box of the same image) pair, grouped by detection
    n_pairs = gt_counts[det_img]
    pair_det = np.repeat(np.arange(d), n_pairs)
    pair_start = np.cumsum(n_pairs) - n_pairs
    pair_gt = np.repeat(gt_starts[det_img] - pair_start, n_pairs) + np.arange(int(n_pairs.sum()))
    if len(pair_det) == 0:
        return tp, fp, order
    ious = _pair_ious(dets[pair_det, :4], gts[pair_gt], offset)
    has = n_pairs > 0
    best = np.full(d, -np.inf, np.float32)
    best[has] = np.maximum.reduceat(ious, pair_start[has])
    # first box reaching the best IoU (np.argmax's tie rule)
    at_best = np.flatnonzero(ious == best[pair_det])
    first = at_best[np.r_[True, pair_det[at_best[1:]] != pair_det[at_best[:-1]]]]
    best_gt = np.full(d, -1, np.int64)
    best_gt[pair_det[first]] = pair_gt[first]

    matched = best >= iou_thr
    ignored = matched & gt_ignore[np.maximum(best_gt, 0)]
    fp[ignored] = 0
    # among detections matching a non-ignored box, the first in score order takes it
    cand = order[matched[order] & ~ignored[order]]
    _, first_of_box = np.unique(best_gt[cand], return_index=True)
    winners = cand[first_of_box]
    tp[winners] = 1
    fp[winners] = 0
    return tp, fp, order


def _as_dets(d: Any, img: int, cls: int) -> np.ndarray:
    arr = np.asarray(d, np.float32)
    if arr.size == 0:
        return np.zeros((0, 5), np.float32)
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise ValueError(f'eval_map: det_results[{img}][{cls}] must be (n, 5) [x1, y1, x2, y2, score], '
                         f'got shape {arr.shape}')
    return arr


def eval_map(det_results: Sequence[Sequence[np.ndarray]], annotations: Sequence[dict[str, np.ndarray]],
             iou_thr: float = 0.5, mode: str = 'area', use_legacy_coordinate: bool = False,
             logger: Any = None, classes: Sequence[str] | None = None) -> tuple[float, list[dict[str, Any]]]:
    """Pascal-VOC mean average precision at one IoU threshold.

    Args:
        det_results: ``det_results[i][c]`` is an ``(n, 5)`` array ``[x1, y1, x2, y2, score]`` of image ``i``,
            class ``c`` (every image lists the same number of classes).
        annotations: ``annotations[i]`` is a dict with ``bboxes`` ``(m, 4)``, ``labels`` ``(m,)`` and optional
            ``bboxes_ignore`` ``(k, 4)``, ``labels_ignore`` ``(k,)``; boxes in the same image as the detections
            (``get_ann_info`` gives original-image pixels).
        iou_thr: IoU a detection needs to match a box.
        mode: ``'area'`` (VOC2010+) or ``'11points'`` (VOC2007).
        use_legacy_coordinate: count widths as ``x2 - x1 + 1`` (the VOC devkit's +1). Leave it off for
            detkit's continuous coordinates: a VOC box read as ``(xmin - 1, ymin - 1, xmax, ymax)`` already
            gives the devkit's IoU.
        logger: where the table goes: ``None`` prints it, ``'silent'`` suppresses it, a ``logging.Logger``
            logs it at INFO, any other callable is called with the text.
        classes: class names for the table (default: the class index).

    Returns:
        ``(mean_ap, per_class)``: the mean AP over classes that have ground truth, and per class a dict with
        ``num_gts`` (non-ignored boxes), ``num_dets``, ``recall`` and ``precision`` ``(num_dets,)`` arrays
        (detections in descending score order) and ``ap``.
    """
    if mode not in ('area', '11points'):
        raise ValueError(f"eval_map: mode must be 'area' or '11points', got {mode!r}")
    if len(det_results) != len(annotations):
        raise ValueError(f'eval_map: {len(det_results)} images of detections but {len(annotations)} annotations')
    num_imgs = len(det_results)
    num_classes = len(det_results[0]) if num_imgs else (len(classes) if classes else 0)
    offset = 1.0 if use_legacy_coordinate else 0.0

    # all ground truth once: per image, non-ignored boxes then ignored ones
    gt_boxes, gt_labels, gt_img, gt_ign = [], [], [], []
    for i, ann in enumerate(annotations):
        b = np.asarray(ann['bboxes'], np.float32).reshape(-1, 4)
        lab = np.asarray(ann['labels'], np.int64).reshape(-1)
        bi = np.asarray(ann.get('bboxes_ignore', np.zeros((0, 4))), np.float32).reshape(-1, 4)
        li = np.asarray(ann.get('labels_ignore', np.zeros(0)), np.int64).reshape(-1)
        if len(b) != len(lab) or len(bi) != len(li):
            raise ValueError(f'eval_map: annotations[{i}] has {len(b)} bboxes but {len(lab)} labels, or '
                             f'{len(bi)} bboxes_ignore but {len(li)} labels_ignore')
        gt_boxes += [b, bi]
        gt_labels += [lab, li]
        gt_img.append(np.full(len(b) + len(bi), i, np.int64))
        gt_ign += [np.zeros(len(b), bool), np.ones(len(bi), bool)]
    gt_boxes_all = np.concatenate(gt_boxes) if gt_boxes else np.zeros((0, 4), np.float32)
    gt_labels_all = np.concatenate(gt_labels) if gt_labels else np.zeros(0, np.int64)
    gt_img_all = np.concatenate(gt_img) if gt_img else np.zeros(0, np.int64)
    gt_ign_all = np.concatenate(gt_ign) if gt_ign else np.zeros(0, bool)

    # all detections once, image by image (one concatenate per image, not per image and class), then
    # grouped by class with a stable sort so that each class keeps the image order
    all_dets, all_cls = [], []
    for i, img_dets in enumerate(det_results):
        if len(img_dets) != num_classes:
            raise ValueError(f'eval_map: det_results[{i}] has {len(img_dets)} classes, det_results[0] has '
                             f'{num_classes}')
        counts = [len(d) for d in img_dets]
        if not counts:
            continue
        try:
            merged = np.concatenate(img_dets).astype(np.float32, copy=False)
            ok = merged.ndim == 2 and merged.shape[1] == 5
        except ValueError:  # e.g. an empty class given as np.array([]) of shape (0,)
            ok = False
        if not ok:
            merged = np.concatenate([_as_dets(d, i, c) for c, d in enumerate(img_dets)])
        all_dets.append(merged)
        all_cls.append(np.repeat(np.arange(num_classes), counts))
    dets_all = np.concatenate(all_dets) if all_dets else np.zeros((0, 5), np.float32)
    cls_all = np.concatenate(all_cls) if all_cls else np.zeros(0, np.int64)
    img_all = np.repeat(np.arange(len(all_dets)), [len(d) for d in all_dets])
    # small non-negative ints: a stable sort of int16 keys is a radix sort
    by_class = np.argsort(cls_all.astype(np.int16 if num_classes < 2**15 else np.int64), kind='stable')
    class_ends = np.searchsorted(cls_all[by_class], np.arange(num_classes), side='right')

    results = []
    for c in range(num_classes):
        idx = by_class[(class_ends[c - 1] if c else 0):class_ends[c]]
        dets, det_img = dets_all[idx], img_all[idx]
        sel = gt_labels_all == c
        gt_ignore = gt_ign_all[sel]
        num_gts = int((~gt_ignore).sum())
        tp, fp, order = _match_class(dets, det_img, gt_boxes_all[sel], gt_img_all[sel], gt_ignore, num_imgs,
                                     iou_thr, offset)
        # float64 curves (mmdetection divides float32 counts, which moves APs by ~1e-8)
        tp_cum = np.cumsum(tp[order], dtype=np.float64)
        fp_cum = np.cumsum(fp[order], dtype=np.float64)
        recall = tp_cum / max(num_gts, _EPS32)
        precision = tp_cum / np.maximum(tp_cum + fp_cum, _EPS32)
        results.append(dict(num_gts=num_gts, num_dets=len(dets), recall=recall, precision=precision,
                            ap=average_precision(recall, precision, mode)))
    aps = [r['ap'] for r in results if r['num_gts'] > 0]
    mean_ap = float(np.mean(aps)) if aps else 0.0
    print_map_summary(mean_ap, results, classes, logger)
    return mean_ap, results


def _emit(text: str, logger: Any) -> None:
    if logger == 'silent':
        return
    if logger is None:
        print(text)
    elif isinstance(logger, logging.Logger):
        logger.info(text)
    elif isinstance(logger, Callable):
        logger(text)
    else:
        raise TypeError(f"logger must be None, 'silent', a logging.Logger or a callable, got {type(logger).__name__}")


def print_map_summary(mean_ap: float, results: list[dict[str, Any]], classes: Sequence[str] | None = None,
                      logger: Any = None) -> str:
    """Format (and emit, see :func:`eval_map`'s ``logger``) the table: class, gts, dets, recall, ap, mAP row.

    Returns:
        The table text.
    """
    names = list(classes) if classes is not None else [str(i) for i in range(len(results))]
    rows = [['class', 'gts', 'dets', 'recall', 'ap']]
    for name, r in zip(names, results):
        recall = float(r['recall'][-1]) if len(r['recall']) else 0.0
        rows.append([name, r['num_gts'], r['num_dets'], f'{recall:.3f}', f'{r["ap"]:.3f}'])
    rows.append(['mAP', '', '', '', f'{mean_ap:.3f}'])
    table = AsciiTable(rows)
    table.inner_footing_row_border = True
    text = '\n' + table.table
    _emit(text, logger)
    return text
