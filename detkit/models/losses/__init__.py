"""Loss functions, registered in ``MODELS`` and built by the heads from their ``loss_cls`` / ``loss_bbox`` configs.

Every loss takes ``(pred, target, weight=None, avg_factor=None)`` and reduces with ``sum / avg_factor`` when an
``avg_factor`` (the number of positive anchors) is given, as mmdetection's do.
"""
from .cross_entropy_loss import CrossEntropyLoss
from .focal_loss import FocalLoss, sigmoid_focal_loss
from .iou_loss import GIoULoss
from .smooth_l1_loss import L1Loss, SmoothL1Loss
from .utils import weight_reduce_loss

__all__ = ['CrossEntropyLoss', 'FocalLoss', 'sigmoid_focal_loss', 'GIoULoss', 'L1Loss', 'SmoothL1Loss',
           'weight_reduce_loss']
