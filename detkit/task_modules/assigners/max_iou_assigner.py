"""Assign priors to ground truth by IoU: the rule of SSD, RetinaNet and the R-CNN family."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from detkit.registry import TASK_UTILS
from detkit.structures import bbox_overlaps

from .assign_result import AssignResult

__all__ = ['MaxIoUAssigner']


@TASK_UTILS.register_module()
class MaxIoUAssigner:
    """Assign each prior (anchor) to the ground-truth box it overlaps most, or to background, or to nothing.

    Every prior gets ``-1`` (ignored), ``0`` (negative) or ``i + 1`` (positive for ground truth ``i``):

    1. every prior starts ignored (``-1``);
    2. priors whose largest IoU with any ground truth is in ``[0, neg_iou_thr)`` (or in the interval
       ``neg_iou_thr = (lo, hi)``) become negative;
    3. priors whose largest IoU is ``>= pos_iou_thr`` become positive for that ground truth;
    4. low-quality matches (``match_low_quality``): each ground truth whose best IoU is ``>= min_pos_iou`` also
       takes its best prior (all its equally best priors with ``gt_max_assign_all``), even when that IoU is below
       ``pos_iou_thr`` and even if the prior was assigned to another box in step 3, so that no object goes
       unmatched. When two ground truths claim the same prior here, the later one (higher index) wins.

    With ``ignore_iof_thr > 0`` and ignore regions (crowd, difficult), priors lying more than ``ignore_iof_thr``
    inside an ignore region (intersection over the *prior's* area) are masked out first: they are never negative
    and become positive only through step 4. An image without ground truth makes every prior negative.

    SSD uses ``pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0, gt_max_assign_all=False``: every ground truth
    keeps its single best anchor.

    Args:
        pos_iou_thr: IoU at or above which a prior is positive.
        neg_iou_thr: IoU below which a prior is negative, or a ``(lo, hi)`` interval ``[lo, hi)``.
        min_pos_iou: smallest IoU a low-quality match may have.
        gt_max_assign_all: in step 4, give a ground truth all the priors tied at its best IoU, not only the first.
        ignore_iof_thr: IoF above which a prior inside an ignore region is ignored; ``<= 0`` disables it.
        match_low_quality: do step 4.
    """

    def __init__(self, pos_iou_thr: float, neg_iou_thr: float | Sequence[float], min_pos_iou: float = 0.0,
                 gt_max_assign_all: bool = True, ignore_iof_thr: float = -1.0,
                 match_low_quality: bool = True) -> None:
        if isinstance(neg_iou_thr, (tuple, list)):
            if len(neg_iou_thr) != 2 or not neg_iou_thr[0] <= neg_iou_thr[1]:
                raise ValueError(f'neg_iou_thr must be a float or a (lo, hi) interval with lo <= hi, got '
                                 f'{neg_iou_thr}')
            neg_iou_thr = (float(neg_iou_thr[0]), float(neg_iou_thr[1]))
        elif not isinstance(neg_iou_thr, (int, float)):
            raise ValueError(f'neg_iou_thr must be a float or a (lo, hi) interval, got {neg_iou_thr!r}')
        neg_hi = neg_iou_thr[1] if isinstance(neg_iou_thr, tuple) else neg_iou_thr
        if neg_hi > pos_iou_thr:
            raise ValueError(f'neg_iou_thr ({neg_iou_thr}) must not exceed pos_iou_thr ({pos_iou_thr}): a prior '
                             'would be both negative and positive')
        self.pos_iou_thr = float(pos_iou_thr)
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = float(min_pos_iou)
        self.gt_max_assign_all = gt_max_assign_all
        self.ignore_iof_thr = float(ignore_iof_thr)
        self.match_low_quality = match_low_quality

    def assign(self, priors: Tensor, gt_bboxes: Tensor, gt_labels: Tensor | None = None,
               gt_bboxes_ignore: Tensor | None = None) -> AssignResult:
        """Assign the priors of one image.

        Args:
            priors: ``Tensor[A, 4]`` anchors, input-image pixels.
            gt_bboxes: ``Tensor[M, 4]`` ground-truth boxes, input-image pixels (``M`` may be 0).
            gt_labels: ``Tensor[M]`` labels, copied into the result for positive priors.
            gt_bboxes_ignore: ``Tensor[K, 4]`` ignore regions, input-image pixels.

        Returns:
            An :class:`AssignResult` with ``gt_inds``, ``max_overlaps`` and ``labels`` of shape ``(A,)``.
        """
        num_priors, num_gts = priors.shape[0], gt_bboxes.shape[0]
        device = priors.device
        if num_gts == 0 or num_priors == 0:
            # no object: every prior is background (nothing to be ignored against)
            gt_inds = torch.zeros(num_priors, dtype=torch.long, device=device)
            max_overlaps = priors.new_zeros(num_priors)
            labels = None if gt_labels is None else torch.full_like(gt_inds, -1)
            return AssignResult(num_gts, gt_inds, max_overlaps, labels)

        overlaps = bbox_overlaps(gt_bboxes.to(priors.dtype), priors)  # (M, A)
        if (self.ignore_iof_thr > 0 and gt_bboxes_ignore is not None and gt_bboxes_ignore.numel() > 0):
            ignore_iof = bbox_overlaps(priors, gt_bboxes_ignore.to(priors.dtype), mode='iof')  # (A, K)
            ignored = ignore_iof.max(dim=1).values > self.ignore_iof_thr
            # -1 is below every threshold: these priors can be neither negative nor positive in steps 2-3
            overlaps[:, ignored] = -1
        return self._assign_wrt_overlaps(overlaps, gt_labels)

    def _assign_wrt_overlaps(self, overlaps: Tensor, gt_labels: Tensor | None) -> AssignResult:
        num_gts, num_priors = overlaps.shape
        # torch.where rather than masked assignment throughout: no data-dependent shapes, no host syncs
        max_overlaps, argmax_overlaps = overlaps.max(dim=0)  # best ground truth of each prior, (A,)
        gt_max_overlaps, gt_argmax_overlaps = overlaps.max(dim=1)  # best prior of each ground truth, (M,)

        # 1. everything ignored until proven otherwise
        gt_inds = overlaps.new_full((num_priors,), -1, dtype=torch.long)

        # 2. negatives
        if isinstance(self.neg_iou_thr, tuple):
            neg = (max_overlaps >= self.neg_iou_thr[0]) & (max_overlaps < self.neg_iou_thr[1])
        else:
            neg = (max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)
        gt_inds = torch.where(neg, 0, gt_inds)

        # 3. positives
        gt_inds = torch.where(max_overlaps >= self.pos_iou_thr, argmax_overlaps + 1, gt_inds)

        # 4. low-quality matches, vectorised: for each prior, the highest-indexed ground truth claiming it (the
        # one a loop over ground truths in order would leave there)
        if self.match_low_quality:
            gt_ids = torch.arange(1, num_gts + 1, device=overlaps.device)  # 1-based
            eligible = gt_max_overlaps >= self.min_pos_iou  # (M,)
            if self.gt_max_assign_all:
                claims = (overlaps == gt_max_overlaps[:, None]) & eligible[:, None]  # (M, A)
                claimed_by = (claims.long() * gt_ids[:, None]).max(dim=0).values  # (A,), 0 = unclaimed
            else:
                claimed_by = torch.zeros(num_priors, dtype=torch.long, device=overlaps.device)
                claimed_by.scatter_reduce_(0, gt_argmax_overlaps, torch.where(eligible, gt_ids, 0), reduce='amax')
            gt_inds = torch.where(claimed_by > 0, claimed_by, gt_inds)

        labels = None
        if gt_labels is not None:
            gt_labels = gt_labels.to(device=gt_inds.device, dtype=torch.long)
            labels = torch.where(gt_inds > 0, gt_labels[(gt_inds - 1).clamp(min=0)], -1)
        return AssignResult(num_gts, gt_inds, max_overlaps, labels)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(pos_iou_thr={self.pos_iou_thr}, neg_iou_thr={self.neg_iou_thr}, '
                f'min_pos_iou={self.min_pos_iou}, gt_max_assign_all={self.gt_max_assign_all}, '
                f'ignore_iof_thr={self.ignore_iof_thr}, match_low_quality={self.match_low_quality})')
