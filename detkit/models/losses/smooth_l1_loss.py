"""Box-regression losses on deltas: Smooth L1 (SSD, M2Det) and L1 (RetinaNet)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from detkit.registry import MODELS

from .utils import check_reduction, weight_reduce_loss

__all__ = ['SmoothL1Loss', 'L1Loss']


class _ElementwiseLoss(nn.Module):
    """Shared ``forward``: an element-wise loss of two ``Tensor[N, 4]``, weighted and reduced."""

    def __init__(self, reduction: str, loss_weight: float) -> None:
        super().__init__()
        check_reduction(type(self).__name__, reduction, loss_weight)
        self.reduction = reduction
        self.loss_weight = float(loss_weight)

    def _loss(self, pred: Tensor, target: Tensor, reduction: str) -> Tensor:
        raise NotImplementedError

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None) -> Tensor:
        """Loss of ``pred`` against ``target`` (same shape, e.g. ``Tensor[P, 4]`` deltas of the positives).

        Args:
            pred: predictions.
            target: targets, same shape.
            weight: broadcastable element weights.
            avg_factor: the sum is divided by this (usually the number of positive anchors).
        """
        if pred.shape != target.shape:
            raise ValueError(f'{type(self).__name__}: pred {tuple(pred.shape)} and target {tuple(target.shape)} '
                             'must have the same shape')
        target = target.to(pred.dtype)
        if weight is None and self.reduction != 'none':
            # one fused reduction: bit-identical to what SSD's loss always computed
            loss = self._loss(pred, target, 'sum')
            if self.reduction == 'mean':
                loss = loss / (avg_factor if avg_factor is not None else max(pred.numel(), 1))
            return self.loss_weight * loss
        return self.loss_weight * weight_reduce_loss(self._loss(pred, target, 'none'), weight, self.reduction,
                                                     avg_factor)

    def extra_repr(self) -> str:
        return f'reduction={self.reduction!r}, loss_weight={self.loss_weight}'


@MODELS.register_module()
class SmoothL1Loss(_ElementwiseLoss):
    """Smooth L1 (Huber-like): ``0.5 x^2 / beta`` below ``beta``, ``|x| - 0.5 beta`` above.

    Args:
        beta: the transition point (1.0 in SSD; 0 gives L1).
        reduction: ``'mean'`` (``sum / avg_factor`` when an ``avg_factor`` is given), ``'sum'`` or ``'none'``.
        loss_weight: multiplies the loss.
    """

    def __init__(self, beta: float = 1.0, reduction: str = 'mean', loss_weight: float = 1.0) -> None:
        super().__init__(reduction, loss_weight)
        if beta < 0:
            raise ValueError(f'SmoothL1Loss: beta must not be negative, got {beta}')
        self.beta = float(beta)

    def _loss(self, pred: Tensor, target: Tensor, reduction: str) -> Tensor:
        return F.smooth_l1_loss(pred, target, beta=self.beta, reduction=reduction)

    def extra_repr(self) -> str:
        return f'beta={self.beta}, ' + super().extra_repr()


@MODELS.register_module()
class L1Loss(_ElementwiseLoss):
    """Absolute difference (RetinaNet's box loss on deltas).

    Args:
        reduction: ``'mean'`` (``sum / avg_factor`` when an ``avg_factor`` is given), ``'sum'`` or ``'none'``.
        loss_weight: multiplies the loss.
    """

    def __init__(self, reduction: str = 'mean', loss_weight: float = 1.0) -> None:
        super().__init__(reduction, loss_weight)

    def _loss(self, pred: Tensor, target: Tensor, reduction: str) -> Tensor:
        return F.l1_loss(pred, target, reduction=reduction)
