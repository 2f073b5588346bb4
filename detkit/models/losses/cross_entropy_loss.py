"""Softmax cross-entropy, the classification loss of SSD and M2Det (with background as the last class)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from detkit.registry import MODELS

from .utils import check_reduction, weight_reduce_loss

__all__ = ['CrossEntropyLoss']


@MODELS.register_module()
class CrossEntropyLoss(nn.Module):
    """Cross-entropy over ``C + 1`` logits (softmax) or ``C`` independent logits (``use_sigmoid``).

    Args:
        use_sigmoid: binary cross-entropy per class against one-hot targets (background = an all-zero row)
            instead of a softmax over the classes.
        reduction: ``'mean'`` (``sum / avg_factor`` when an ``avg_factor`` is given), ``'sum'`` or ``'none'``.
        loss_weight: multiplies the loss.
    """

    def __init__(self, use_sigmoid: bool = False, reduction: str = 'mean', loss_weight: float = 1.0) -> None:
        super().__init__()
        check_reduction('CrossEntropyLoss', reduction, loss_weight)
        self.use_sigmoid = bool(use_sigmoid)
        self.reduction = reduction
        self.loss_weight = float(loss_weight)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None) -> Tensor:
        """Cross-entropy of ``N`` predictions.

        Args:
            pred: ``Tensor[N, K]`` logits.
            target: ``Tensor[N]`` int64 labels in ``0 .. K - 1`` (softmax) or ``0 .. K`` (sigmoid, ``K`` =
                background).
            weight: ``Tensor[N]`` per-prediction weights.
            avg_factor: the sum is divided by this (SSD: the number of positive anchors).
        """
        if self.use_sigmoid:
            onehot = F.one_hot(target.long(), pred.shape[1] + 1)[:, :pred.shape[1]].to(pred.dtype)
            loss = F.binary_cross_entropy_with_logits(pred, onehot, reduction='none')
            if weight is not None:
                weight = weight[:, None]
        elif weight is None and self.reduction != 'none':
            # one fused reduction: bit-identical to what SSD's loss always computed
            loss = F.cross_entropy(pred, target, reduction='sum')
            if self.reduction == 'mean':
                loss = loss / (avg_factor if avg_factor is not None else max(pred.shape[0], 1))
            return self.loss_weight * loss
        else:
            loss = F.cross_entropy(pred, target, reduction='none')
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)

    def extra_repr(self) -> str:
        return f'use_sigmoid={self.use_sigmoid}, reduction={self.reduction!r}, loss_weight={self.loss_weight}'
