"""The R-CNN box parameterisation: centre offsets in units of the prior's size, log size ratios."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from detkit.registry import TASK_UTILS

__all__ = ['DeltaXYWHBBoxCoder']


@TASK_UTILS.register_module()
class DeltaXYWHBBoxCoder:
    """Encode boxes as deltas ``(dx, dy, dw, dh)`` from priors (anchors) and decode them back.

    With prior centre ``(px, py)`` and size ``(pw, ph)`` and target box centre ``(gx, gy)`` and size ``(gw, gh)``::

        dx = (gx - px) / pw    dy = (gy - py) / ph    dw = log(gw / pw)    dh = log(gh / ph)

    and the deltas are normalised as ``(d - target_means) / target_stds``. SSD uses stds ``(0.1, 0.1, 0.2, 0.2)``
    (torchvision writes the same as weights ``(10, 10, 5, 5)``), RetinaNet ``(1, 1, 1, 1)``.

    Args:
        target_means: means subtracted from the deltas, ``(dx, dy, dw, dh)`` order.
        target_stds: standard deviations dividing the deltas.
        clip_border: clip decoded boxes to ``max_shape`` when one is given to :meth:`decode`.
        wh_ratio_clip: decoded ``dw``/``dh`` are clamped to ``|log(wh_ratio_clip)|`` (``log(1000 / 16)`` ~ 4.14 by
            default), so a box is at most 62.5x its prior's size: an untrained head's large deltas would otherwise
            overflow ``exp`` to ``inf`` boxes.
        clamp_shrink: clamp ``dw``/``dh`` from below too (``-|log(wh_ratio_clip)|``: a box is at least 1/62.5 of
            its prior's size), as mmdetection does. torchvision's ``BoxCoder`` clamps only from above, so its boxes
            may shrink to (nearly) nothing: ``False`` reproduces that (the ``_tv`` configs).
    """

    def __init__(self, target_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
                 target_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0), clip_border: bool = True,
                 wh_ratio_clip: float = 16 / 1000, clamp_shrink: bool = True) -> None:
        if len(target_means) != 4 or len(target_stds) != 4:
            raise ValueError(f'target_means and target_stds must have 4 values (dx, dy, dw, dh), got '
                             f'{list(target_means)} and {list(target_stds)}')
        if any(s <= 0 for s in target_stds):
            raise ValueError(f'target_stds must be positive, got {list(target_stds)}')
        if not 0 < wh_ratio_clip < 1:
            raise ValueError(f'wh_ratio_clip must be in (0, 1), got {wh_ratio_clip}')
        self.target_means = tuple(float(m) for m in target_means)
        self.target_stds = tuple(float(s) for s in target_stds)
        self.clip_border = clip_border
        self.wh_ratio_clip = wh_ratio_clip
        self.max_ratio = abs(math.log(wh_ratio_clip))
        self.clamp_shrink = bool(clamp_shrink)

    def encode(self, priors: Tensor, gt_bboxes: Tensor) -> Tensor:
        """Deltas that take ``priors`` to ``gt_bboxes``.

        Args:
            priors: ``Tensor[..., 4]`` ``x1, y1, x2, y2`` (e.g. anchors, input-image pixels).
            gt_bboxes: ``Tensor[..., 4]`` target boxes in the same image, same shape as ``priors``.

        Returns:
            ``Tensor[..., 4]`` normalised deltas ``(dx, dy, dw, dh)``.
        """
        if priors.shape != gt_bboxes.shape:
            raise ValueError(f'priors and gt_bboxes must have the same shape, got {tuple(priors.shape)} and '
                             f'{tuple(gt_bboxes.shape)}')
        priors = priors.float()
        gt_bboxes = gt_bboxes.float()
        pw = priors[..., 2] - priors[..., 0]
        ph = priors[..., 3] - priors[..., 1]
        px = priors[..., 0] + 0.5 * pw
        py = priors[..., 1] + 0.5 * ph
        gw = gt_bboxes[..., 2] - gt_bboxes[..., 0]
        gh = gt_bboxes[..., 3] - gt_bboxes[..., 1]
        gx = gt_bboxes[..., 0] + 0.5 * gw
        gy = gt_bboxes[..., 1] + 0.5 * gh
        deltas = torch.stack(((gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)), dim=-1)
        means = deltas.new_tensor(self.target_means)
        stds = deltas.new_tensor(self.target_stds)
        return (deltas - means) / stds

    def decode(self, priors: Tensor, deltas: Tensor, max_shape: tuple[int, int] | None = None) -> Tensor:
        """Boxes obtained by applying ``deltas`` to ``priors``.

        Args:
            priors: ``Tensor[..., 4]`` ``x1, y1, x2, y2``; broadcastable against ``deltas`` (e.g. ``(A, 4)``
                anchors with ``(N, A, 4)`` deltas).
            deltas: ``Tensor[..., 4]`` normalised ``(dx, dy, dw, dh)``.
            max_shape: ``(h, w)`` of the image the priors live in; with ``clip_border`` the boxes are clipped to
                ``[0, w] x [0, h]``.

        Returns:
            ``Tensor[..., 4]`` boxes ``x1, y1, x2, y2`` in the priors' image, with ``deltas``' dtype.
        """
        means = deltas.new_tensor(self.target_means)
        stds = deltas.new_tensor(self.target_stds)
        d = deltas * stds + means
        dx, dy = d[..., 0], d[..., 1]
        min_ratio = -self.max_ratio if self.clamp_shrink else None
        dw = d[..., 2].clamp(min=min_ratio, max=self.max_ratio)
        dh = d[..., 3].clamp(min=min_ratio, max=self.max_ratio)
        priors = priors.to(deltas.dtype)
        pw = priors[..., 2] - priors[..., 0]
        ph = priors[..., 3] - priors[..., 1]
        px = priors[..., 0] + 0.5 * pw
        py = priors[..., 1] + 0.5 * ph
        gx = px + pw * dx
        gy = py + ph * dy
        gw = pw * dw.exp()
        gh = ph * dh.exp()
        boxes = torch.stack((gx - 0.5 * gw, gy - 0.5 * gh, gx + 0.5 * gw, gy + 0.5 * gh), dim=-1)
        if self.clip_border and max_shape is not None:
            h, w = max_shape[0], max_shape[1]
            boxes[..., 0::2] = boxes[..., 0::2].clamp(min=0, max=w)
            boxes[..., 1::2] = boxes[..., 1::2].clamp(min=0, max=h)
        return boxes

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(target_means={self.target_means}, target_stds={self.target_stds}, '
                f'clip_border={self.clip_border}, wh_ratio_clip={self.wh_ratio_clip}, '
                f'clamp_shrink={self.clamp_shrink})')
