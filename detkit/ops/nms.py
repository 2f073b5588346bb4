"""Non-maximum suppression: hard, class-aware (batched) and soft.

All boxes are ``(N, 4)`` floating-point ``x1, y1, x2, y2`` in pixels of one image (whichever image the caller's
boxes live in; NMS only compares boxes with each other). The compiled kernels of ``detkit._C``
(``torch.ops.detkit.*``) are used when they are built for the tensors' device; otherwise a vectorised
pure-PyTorch fallback gives the same results, with one warning that says how to build the extension.

Semantics are those of :func:`torchvision.ops.nms` and :func:`torchvision.ops.batched_nms`: boxes are visited by
descending score (equal scores: lower index first), and a box is suppressed by a kept box whose IoU with it is
strictly greater than ``iou_threshold``.

Soft-NMS returns its boxes by decayed score. :func:`batched_soft_nms` defines the order exactly, over all classes
together: NaN scores first, then descending decayed score, equal scores (``0.0`` and ``-0.0`` included) by
ascending input index; that is ``torch.sort(descending=True, stable=True)`` of the kept boxes listed by input
index. :func:`soft_nms` returns its boxes in selection order, which is that same order whenever no score is
negative or ``+inf`` (a decay never raises a finite non-negative score).

NaN handling (never a crash or a hang):
    * a box with a NaN coordinate has a NaN IoU with every box, so it never suppresses another box and is never
      suppressed: it is always kept (hard NMS), and never decays a score (soft-NMS);
    * a NaN score sorts before every number, as in :func:`torch.sort`, so its box is visited (or, in soft-NMS,
      selected) first; soft-NMS keeps it, since NaN is never below ``min_score``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import nms_fallback
from ._ext import has_kernel, warn_fallback_once

__all__ = ['nms', 'batched_nms', 'soft_nms', 'batched_soft_nms']

_SOFT_METHODS = {'linear': 0, 'gaussian': 1}


def _check_boxes_scores(boxes: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(boxes, Tensor):
        raise ValueError(f'boxes must be a torch.Tensor of shape (N, 4), got {type(boxes).__name__}')
    if not isinstance(scores, Tensor):
        raise ValueError(f'scores must be a torch.Tensor of shape (N,), got {type(scores).__name__}')
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f'boxes must have shape (N, 4) (x1, y1, x2, y2), got {tuple(boxes.shape)}')
    if scores.dim() != 1:
        raise ValueError(f'scores must have shape (N,), got {tuple(scores.shape)}')
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f'boxes and scores must have the same length, got {boxes.shape[0]} boxes and '
                         f'{scores.shape[0]} scores')
    if not boxes.is_floating_point():
        raise ValueError(f'boxes must be floating point (x1, y1, x2, y2 in pixels), got {boxes.dtype}; '
                         'convert them with boxes.float()')
    if not scores.is_floating_point():
        raise ValueError(f'scores must be floating point, got {scores.dtype}')
    if scores.device != boxes.device:
        raise ValueError(f'scores must be on the boxes\' device ({boxes.device}), got {scores.device}')
    if boxes.device.type == 'meta':  # which boxes survive depends on their values, which meta tensors lack
        raise ValueError('detkit.ops NMS got meta tensors: these ops need real data (their output length depends '
                         'on the values); the registered fake kernels serve torch.export / torch.compile tracing')
    # the kernels work in float32 or float64; half-precision inputs are computed in float32
    dtype = boxes.dtype if boxes.dtype in (torch.float32, torch.float64) else torch.float32
    return boxes.to(dtype), scores.to(dtype)


def _check_idxs(idxs: Tensor, boxes: Tensor) -> Tensor:
    """``idxs`` as int64 on the boxes' device, after checking that it is an integer ``Tensor[N]``."""
    if not isinstance(idxs, Tensor) or idxs.dim() != 1 or idxs.shape[0] != boxes.shape[0]:
        shape = tuple(idxs.shape) if isinstance(idxs, Tensor) else type(idxs).__name__
        raise ValueError(f'idxs must be a tensor of shape ({boxes.shape[0]},) matching boxes, got {shape}')
    if idxs.is_floating_point() or idxs.is_complex() or idxs.dtype == torch.bool:
        raise ValueError(f'idxs must be an integer tensor, got {idxs.dtype}')
    return idxs.to(device=boxes.device, dtype=torch.long)


def _check_threshold(name: str, value: float) -> float:
    if isinstance(value, Tensor):
        value = value.item()
    if not isinstance(value, (int, float)):
        raise ValueError(f'{name} must be a number, got {type(value).__name__}')
    return float(value)


def _use_kernel(op: str, device: torch.device) -> bool:
    if has_kernel(op, device.type):
        return True
    warn_fallback_once(op, device.type)
    return False


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``Tensor[N, 4]`` float, ``x1, y1, x2, y2``.
        scores: ``Tensor[N]`` float.
        iou_threshold: a box is discarded when its IoU with a kept, higher-scoring box is ``> iou_threshold``.

    Returns:
        ``Tensor[K]`` int64 indices into ``boxes`` of the kept boxes, by descending score.

    Raises:
        ValueError: naming the argument, for wrong shapes, a length mismatch or non-float boxes/scores.
    """
    boxes, scores = _check_boxes_scores(boxes, scores)
    iou_threshold = _check_threshold('iou_threshold', iou_threshold)
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    if _use_kernel('nms', boxes.device):
        return torch.ops.detkit.nms(boxes, scores, iou_threshold)
    return nms_fallback.nms_torch(boxes, scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS: boxes suppress each other only when their ``idxs`` (e.g. class labels) are equal.

    Args:
        boxes: ``Tensor[N, 4]`` float, ``x1, y1, x2, y2``.
        scores: ``Tensor[N]`` float.
        idxs: ``Tensor[N]`` integer category (or image) of each box.
        iou_threshold: IoU above which a lower-scoring box of the same category is discarded.

    Returns:
        ``Tensor[K]`` int64 indices into ``boxes`` of the kept boxes, by descending score.
    """
    boxes, scores = _check_boxes_scores(boxes, scores)
    idxs = _check_idxs(idxs, boxes)
    iou_threshold = _check_threshold('iou_threshold', iou_threshold)
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    if _use_kernel('batched_nms', boxes.device):
        return torch.ops.detkit.batched_nms(boxes, scores, idxs, iou_threshold)
    return nms_fallback.batched_nms_torch(boxes, scores, idxs, iou_threshold)


def _check_soft_args(method: str, iou_threshold: float, sigma: float,
                     min_score: float) -> tuple[int, float, float, float]:
    """The soft-NMS arguments as the kernels take them: ``(method code, iou_threshold, sigma, min_score)``."""
    if method not in _SOFT_METHODS:
        raise ValueError(f"method must be one of {sorted(_SOFT_METHODS)}, got {method!r}")
    iou_threshold = _check_threshold('iou_threshold', iou_threshold)
    sigma = _check_threshold('sigma', sigma)
    min_score = _check_threshold('min_score', min_score)
    if method == 'gaussian' and not sigma > 0:
        raise ValueError(f'sigma must be > 0 for the gaussian method, got {sigma}')
    return _SOFT_METHODS[method], iou_threshold, sigma, min_score


def soft_nms(boxes: Tensor, scores: Tensor, iou_threshold: float = 0.3, sigma: float = 0.5,
             min_score: float = 1e-3, method: str = 'linear') -> tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al., ICCV 2017): decay the scores of overlapping boxes instead of removing them.

    Repeatedly selects the box of highest current score (ties: the lowest index) and decays every remaining box's
    score by its IoU with it: ``linear`` multiplies by ``1 - iou`` when ``iou > iou_threshold``; ``gaussian``
    multiplies every box by ``exp(-iou**2 / sigma)`` (``iou_threshold`` is then unused). Boxes whose score is
    below ``min_score``, at the start or after a decay, are dropped. Runs on the CPU (CUDA tensors are copied
    there and back).

    Args:
        boxes: ``Tensor[N, 4]`` float, ``x1, y1, x2, y2``.
        scores: ``Tensor[N]`` float.
        iou_threshold: linear method's IoU threshold.
        sigma: gaussian method's width, ``> 0``.
        min_score: boxes whose (decayed) score falls below it are discarded (compared in float64).
        method: ``'linear'`` or ``'gaussian'``.

    Returns:
        ``dets``: ``Tensor[K, 5]`` the kept boxes with their decayed scores as the last column, in selection order
        (by descending decayed score, see the module's docstring); ``keep``: ``Tensor[K]`` int64 indices into
        ``boxes``.

    Raises:
        ValueError: naming the argument, for wrong shapes, non-float boxes/scores, an unknown method or a
        gaussian ``sigma <= 0``.
    """
    boxes, scores = _check_boxes_scores(boxes, scores)
    code, iou_threshold, sigma, min_score = _check_soft_args(method, iou_threshold, sigma, min_score)
    device = boxes.device
    if boxes.shape[0] == 0:
        return boxes.new_empty((0, 5)), torch.empty(0, dtype=torch.long, device=device)
    if _use_kernel('soft_nms', torch.device('cpu')):
        dets, keep = torch.ops.detkit.soft_nms(boxes.cpu(), scores.cpu(), iou_threshold, sigma, min_score, code)
        return dets.to(device), keep.to(device)
    return nms_fallback.soft_nms_torch(boxes, scores, iou_threshold, sigma, min_score, method)


def batched_soft_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float = 0.3, sigma: float = 0.5,
                     min_score: float = 1e-3, method: str = 'linear') -> tuple[Tensor, Tensor]:
    """Class-aware soft-NMS: :func:`soft_nms` run independently within each value of ``idxs``.

    A box's score is only decayed by selected boxes with the same ``idxs`` (e.g. class label, or image and class
    combined); every rule of :func:`soft_nms` holds within a class (ties: the lowest index; NaN scores selected
    first; a NaN box never decays a score; ``min_score`` compared in float64). The classes' outputs are then
    merged into one list ordered by decayed score:

    * NaN scores first (as :func:`torch.sort`), by ascending input index;
    * then by descending decayed score;
    * equal scores (``0.0`` and ``-0.0`` are equal) by ascending input index.

    That is ``torch.sort(dets[:, 4], descending=True, stable=True)`` over the kept boxes listed by input index.
    With one class the result equals :func:`soft_nms`'s whenever no score is negative or ``+inf`` (then the
    selection order already is this order).

    Runs on the CPU: the compiled kernel runs the classes in parallel (when they hold enough boxes to pay for it);
    CUDA tensors are copied to the CPU and the results back. Without the compiled kernel, a vectorised pure-PyTorch
    fallback (on the tensors' device) gives the same results (to the bit, as the tests check on the CPU).

    Args:
        boxes: ``Tensor[N, 4]`` float, ``x1, y1, x2, y2``.
        scores: ``Tensor[N]`` float.
        idxs: ``Tensor[N]`` integer category (or image) of each box; any values, gaps and negatives included.
        iou_threshold: linear method's IoU threshold.
        sigma: gaussian method's width, ``> 0``.
        min_score: boxes whose (decayed) score falls below it are discarded (compared in float64).
        method: ``'linear'`` or ``'gaussian'``.

    Returns:
        ``dets``: ``Tensor[K, 5]`` the kept boxes with their decayed scores as the last column, in the order above;
        ``keep``: ``Tensor[K]`` int64 indices into ``boxes``, in the same order.

    Raises:
        ValueError: naming the argument, for wrong shapes, non-float boxes/scores, non-integer or mis-sized
        ``idxs``, an unknown method or a gaussian ``sigma <= 0``.
    """
    boxes, scores = _check_boxes_scores(boxes, scores)
    idxs = _check_idxs(idxs, boxes)
    code, iou_threshold, sigma, min_score = _check_soft_args(method, iou_threshold, sigma, min_score)
    device = boxes.device
    if boxes.shape[0] == 0:
        return boxes.new_empty((0, 5)), torch.empty(0, dtype=torch.long, device=device)
    if _use_kernel('batched_soft_nms', torch.device('cpu')):
        dets, keep = torch.ops.detkit.batched_soft_nms(boxes.cpu(), scores.cpu(), idxs.cpu(), iou_threshold, sigma,
                                                       min_score, code)
        return dets.to(device), keep.to(device)
    return nms_fallback.batched_soft_nms_torch(boxes, scores, idxs, iou_threshold, sigma, min_score, method)
