"""Focal loss (Lin et al., ICCV 2017), the classification loss of RetinaNet."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.registry import MODELS

from .utils import check_reduction, weight_reduce_loss

__all__ = ['FocalLoss', 'sigmoid_focal_loss']


def sigmoid_focal_loss(pred: Tensor, target: Tensor, gamma: float = 2.0, alpha: float = 0.25) -> Tensor:
    """Element-wise sigmoid focal loss, the formula of the paper and of ``torchvision.ops.sigmoid_focal_loss``.

    ``FL = -alpha_t * (1 - p_t) ** gamma * log(p_t)`` with ``p_t = p`` for a positive target and ``1 - p`` for a
    negative one; the log term is computed as binary cross-entropy with logits, which is stable for large logits.

    Args:
        pred: ``Tensor[...]`` logits.
        target: ``Tensor[...]`` float targets in ``[0, 1]`` (one-hot for classification), same shape.
        gamma: focusing parameter; 0 gives (alpha-weighted) binary cross-entropy.
        alpha: weight of the positives in ``[0, 1]``, negatives get ``1 - alpha``; a negative value disables it.

    Returns:
        ``Tensor[...]`` the loss of every element.
    """
    p = torch.sigmoid(pred)
    ce = F.binary_cross_entropy_with_logits(pred, target, reduction='none')
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss


@MODELS.register_module()
class FocalLoss(nn.Module):
    """Sigmoid focal loss over ``C`` classes, without a background channel.

    Args:
        use_sigmoid: must be ``True`` (the softmax variant is not implemented; mmdetection's spelling is kept so
            that its configs read the same).
        gamma: focusing parameter (2.0 in RetinaNet).
        alpha: weight of the positives (0.25 in RetinaNet).
        reduction: ``'mean'`` (``sum / avg_factor`` when an ``avg_factor`` is given), ``'sum'`` or ``'none'``.
        loss_weight: multiplies the loss.
    """

    def __init__(self, use_sigmoid: bool = True, gamma: float = 2.0, alpha: float = 0.25, reduction: str = 'mean',
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if not use_sigmoid:
            raise ValueError('FocalLoss: only the sigmoid focal loss is implemented (use_sigmoid=True)')
        if gamma < 0:
            raise ValueError(f'FocalLoss: gamma must not be negative, got {gamma}')
        if alpha > 1:
            raise ValueError(f'FocalLoss: alpha must be in [0, 1] (or negative to disable it), got {alpha}')
        check_reduction('FocalLoss', reduction, loss_weight)
        self.use_sigmoid = True
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.reduction = reduction
        self.loss_weight = float(loss_weight)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None) -> Tensor:
        """Focal loss of ``N`` predictions.

        Args:
            pred: ``Tensor[N, C]`` logits.
            target: ``Tensor[N]`` int64 labels in ``0 .. C`` where ``C`` means background (an all-zero target
                row), or ``Tensor[N, C]`` float (one-hot) targets.
            weight: ``Tensor[N]`` or ``Tensor[N, C]`` element weights.
            avg_factor: the sum is divided by this (usually the number of positive anchors).
        """
        if pred.dim() != 2:
            raise ValueError(f'FocalLoss: pred must be (N, C) logits, got shape {tuple(pred.shape)}')
        num_classes = pred.shape[1]
        if target.dim() == 1:
            # background (label C) becomes an all-zero row: one column too many, dropped
            target = F.one_hot(target.long(), num_classes + 1)[:, :num_classes]
        if target.shape != pred.shape:
            raise ValueError(f'FocalLoss: target must be (N,) labels or (N, C) like pred {tuple(pred.shape)}, got '
                             f'{tuple(target.shape)}')
        if weight is not None and weight.dim() == 1:
            weight = weight[:, None]
        loss = sigmoid_focal_loss(pred, target.to(pred.dtype), self.gamma, self.alpha)
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)

    def extra_repr(self) -> str:
        return f'gamma={self.gamma}, alpha={self.alpha}, reduction={self.reduction!r}, loss_weight={self.loss_weight}'
