"""IoU-based box losses on decoded boxes."""
from __future__ import annotations

from torch import Tensor, nn

from detkit.registry import MODELS
from detkit.structures import bbox_overlaps

from .utils import check_reduction, weight_reduce_loss

__all__ = ['GIoULoss']


@MODELS.register_module()
class GIoULoss(nn.Module):
    """``1 - GIoU`` of aligned box pairs (Rezatofighi et al., CVPR 2019).

    It compares boxes, not deltas: a head with this loss decodes its predictions first (``decodes_boxes``).

    Args:
        eps: keeps empty unions and enclosing boxes from dividing by zero.
        reduction: ``'mean'`` (``sum / avg_factor`` when an ``avg_factor`` is given), ``'sum'`` or ``'none'``.
        loss_weight: multiplies the loss.
    """

    #: heads decode their box predictions before calling this loss
    decodes_boxes = True

    def __init__(self, eps: float = 1e-6, reduction: str = 'mean', loss_weight: float = 1.0) -> None:
        super().__init__()
        check_reduction('GIoULoss', reduction, loss_weight)
        self.eps = float(eps)
        self.reduction = reduction
        self.loss_weight = float(loss_weight)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None) -> Tensor:
        """Loss of predicted boxes against target boxes.

        Args:
            pred: ``Tensor[P, 4]`` boxes ``x1, y1, x2, y2``.
            target: ``Tensor[P, 4]`` boxes in the same image.
            weight: ``Tensor[P]`` weights.
            avg_factor: the sum is divided by this (usually the number of positive anchors).
        """
        if pred.shape != target.shape or pred.dim() != 2 or pred.shape[-1] != 4:
            raise ValueError(f'GIoULoss: pred and target must both be (P, 4) boxes, got {tuple(pred.shape)} and '
                             f'{tuple(target.shape)}')
        giou = bbox_overlaps(pred, target.to(pred.dtype), mode='giou', is_aligned=True, eps=self.eps)
        return self.loss_weight * weight_reduce_loss(1 - giou, weight, self.reduction, avg_factor)

    def extra_repr(self) -> str:
        return f'eps={self.eps}, reduction={self.reduction!r}, loss_weight={self.loss_weight}'
