"""What an assigner says about every prior (anchor) of one image."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ['AssignResult']


@dataclass
class AssignResult:
    """Assignment of ``A`` priors to ``num_gts`` ground-truth boxes of one image.

    Attributes:
        num_gts: number of ground-truth boxes.
        gt_inds: ``Tensor[A]`` int64, 1-based: ``i > 0`` means the prior is positive for ground truth ``i - 1``,
            ``0`` means negative (background), ``-1`` means ignored (in no loss).
        max_overlaps: ``Tensor[A]`` the prior's largest IoU with any ground truth (``-1`` where an ignore region
            masked it, ``0`` when there is no ground truth).
        labels: ``Tensor[A]`` int64 label of the assigned ground truth, ``-1`` where the prior is not positive;
            ``None`` when no labels were given.
    """

    num_gts: int
    gt_inds: Tensor
    max_overlaps: Tensor
    labels: Tensor | None = None

    @property
    def pos_mask(self) -> Tensor:
        """``Tensor[A]`` bool, the positive priors."""
        return self.gt_inds > 0

    @property
    def neg_mask(self) -> Tensor:
        """``Tensor[A]`` bool, the negative priors."""
        return self.gt_inds == 0
