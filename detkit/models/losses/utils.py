"""Reduction shared by the losses: element-wise loss -> weighted -> mean / sum / none, with an averaging factor."""
from __future__ import annotations

from torch import Tensor

__all__ = ['REDUCTIONS', 'weight_reduce_loss', 'check_reduction']

REDUCTIONS = ('none', 'mean', 'sum')


def check_reduction(owner: str, reduction: str, loss_weight: float) -> None:
    """Raise a ``ValueError`` naming ``owner`` for an unknown ``reduction`` or a negative ``loss_weight``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f'{owner}: reduction must be one of {REDUCTIONS}, got {reduction!r}')
    if loss_weight < 0:
        raise ValueError(f'{owner}: loss_weight must not be negative, got {loss_weight}')


def weight_reduce_loss(loss: Tensor, weight: Tensor | None = None, reduction: str = 'mean',
                       avg_factor: float | Tensor | None = None) -> Tensor:
    """Weight an element-wise loss and reduce it.

    Detection losses are normalised by the number of positive anchors of the batch rather than by the number of
    elements, so ``reduction='mean'`` with ``avg_factor`` means ``sum / avg_factor`` (mmdetection's convention).

    Args:
        loss: element-wise loss, any shape.
        weight: broadcastable to ``loss``; ``None`` for all ones.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        avg_factor: with ``'mean'``, divide the sum by this instead of the number of elements.

    Returns:
        The reduced loss (a scalar unless ``reduction='none'``).
    """
    if weight is not None:
        loss = loss * weight
    if reduction == 'none':
        if avg_factor is not None:
            raise ValueError("avg_factor cannot be used with reduction='none'")
        return loss
    if reduction == 'sum':
        return loss.sum()
    if avg_factor is None:
        return loss.mean()
    return loss.sum() / avg_factor
