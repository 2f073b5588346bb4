"""``AnchorHead``: what every anchor-based dense head shares (anchors, targets, box loss, prediction).

A head is its layers plus its loss. A subclass builds its convs in ``__init__`` (after ``super().__init__``),
implements ``forward(feats) -> (cls_scores, bbox_preds)`` and one readable ``loss``; this base class gives it:

* :meth:`AnchorHead.anchors` - the anchors of the feature maps it was given (any input size);
* :meth:`AnchorHead.get_targets` - assignment (the assigner) of every anchor of every image;
* :meth:`AnchorHead.bbox_loss` - the box loss of the positives, on deltas (L1, Smooth L1) or on decoded boxes
  (GIoU), as detectron2's ``_dense_box_regression_loss``;
* :meth:`AnchorHead.predict` - scores (sigmoid, or softmax with the background last) -> score threshold -> top-k
  per level -> decoding -> clipping -> rescaling -> class-aware NMS (hard or soft) -> the best ``max_per_img``.

The layout follows detectron2's ``DenseDetector``; unlike mmdetection's ``AnchorHead`` it owns no layers, so no
subclass has to skip its parent's constructor.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from detkit.registry import MODELS, TASK_UTILS, build_if_config

from ..utils.postprocess import TestConfig, multiclass_nms, top_k_per_class

__all__ = ['AnchorHead', 'AnchorTargets', 'flatten_levels']


def flatten_levels(maps: Sequence[Tensor], k: int) -> Tensor:
    """Per-level ``Tensor[N, A_l * k, H_l, W_l]`` -> ``Tensor[N, sum_l H_l * W_l * A_l, k]``.

    Row ``(i * W_l + j) * A_l + a`` of level ``l`` is anchor ``a`` at location ``(i, j)``, the anchor generator's
    order, because channel ``a * k + c`` of the conv output is value ``c`` of anchor ``a``.
    """
    n = maps[0].shape[0]
    return torch.cat([m.permute(0, 2, 3, 1).reshape(n, -1, k) for m in maps], dim=1)  # (N, HWA, k)


class AnchorTargets(NamedTuple):
    """What :meth:`AnchorHead.get_targets` assigns to the ``A`` anchors of ``N`` images.

    Attributes:
        labels: ``Tensor[N, A]`` int64, the class of every positive anchor and ``num_classes`` (background)
            everywhere else.
        pos_mask: ``Tensor[N, A]`` bool, positive anchors.
        neg_mask: ``Tensor[N, A]`` bool, negative anchors (ignored anchors are in neither mask).
        pos_anchors: ``Tensor[P, 4]`` the positives' anchors, in ``pos_mask``'s row-major order.
        pos_gt_boxes: ``Tensor[P, 4]`` the ground-truth box each positive is assigned to, same order.
    """

    labels: Tensor
    pos_mask: Tensor
    neg_mask: Tensor
    pos_anchors: Tensor
    pos_gt_boxes: Tensor


class AnchorHead(nn.Module):
    """Base of the anchor-based dense heads: anchors, targets, box loss and prediction; no layers.

    Scores are per-class sigmoids (no background channel: ``cls_out_channels = num_classes``) when the
    classification loss says ``use_sigmoid`` (RetinaNet's focal loss), else a softmax over ``num_classes + 1``
    logits with **the background last** (SSD, M2Det). Box outputs are ``bbox_coder`` deltas from the anchors.

    Args:
        num_classes: foreground classes (20 for VOC, 80 for COCO).
        in_channels: channels of each input level (the detector fills them from the neck's ``out_channels``).
        anchor_generator: an anchor generator or its ``TASK_UTILS`` config.
        bbox_coder: a box coder or its config.
        assigner: an assigner or its config.
        loss_cls: the classification loss or its ``MODELS`` config; its ``use_sigmoid`` chooses the scores.
        loss_bbox: the box loss or its config; a loss with ``decodes_boxes = True`` (GIoU) compares decoded boxes,
            any other compares deltas.

    Attributes:
        default_test_cfg: the post-processing of the head's paper, used for the keys a detector's ``test_cfg``
            leaves out (each subclass sets its own).
    """

    default_test_cfg: ClassVar[dict[str, Any]] = {}

    def __init__(self, num_classes: int, in_channels: Sequence[int], *, anchor_generator: Any, bbox_coder: Any,
                 assigner: Any, loss_cls: Any, loss_bbox: Any) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f'{name}: num_classes must be a positive int (foreground classes), got {num_classes!r}')
        self.num_classes = num_classes
        self.in_channels = tuple(in_channels)
        self.anchor_generator = build_if_config(anchor_generator, TASK_UTILS, f'{name}.anchor_generator')
        self.bbox_coder = build_if_config(bbox_coder, TASK_UTILS, f'{name}.bbox_coder')
        self.assigner = build_if_config(assigner, TASK_UTILS, f'{name}.assigner')
        self.loss_cls = build_if_config(loss_cls, MODELS, f'{name}.loss_cls')
        self.loss_bbox = build_if_config(loss_bbox, MODELS, f'{name}.loss_bbox')
        self.use_sigmoid = bool(getattr(self.loss_cls, 'use_sigmoid', False))
        self.cls_out_channels = num_classes if self.use_sigmoid else num_classes + 1  # + background, last
        self.num_base_priors = list(self.anchor_generator.num_base_priors)
        if len(self.num_base_priors) != len(self.in_channels):
            raise ValueError(f'{name}: in_channels gives {len(self.in_channels)} levels {self.in_channels} but the '
                             f'anchor generator has {len(self.num_base_priors)} levels (anchors per location '
                             f'{self.num_base_priors}, strides {self.anchor_generator.strides})')
        self.test_cfg = TestConfig.from_cfg(None, self.default_test_cfg)

    # ------------------------------------------------------------------------------------------------ anchors
    def anchors(self, cls_scores: Sequence[Tensor]) -> list[Tensor]:
        """Anchors of every level for these outputs, ``Tensor[H_l * W_l * A_l, 4]`` in input-image pixels.

        Raises:
            ValueError: naming the expected and actual feature-map sizes when the anchors are made for one input
                size (SSD, M2Det) and the input was another.
        """
        featmap_sizes = [tuple(s.shape[-2:]) for s in cls_scores]
        return self.anchor_generator.grid_priors(featmap_sizes, dtype=cls_scores[0].dtype,
                                                 device=cls_scores[0].device)

    # ----------------------------------------------------------------------------------------------- training
    @torch.no_grad()
    def get_targets(self, anchors: Tensor, targets: Sequence[Mapping[str, Tensor]]) -> AnchorTargets:
        """Assign the anchors of every image.

        Args:
            anchors: ``Tensor[A, 4]`` in input-image pixels.
            targets: one dict per image: ``boxes`` ``Tensor[M, 4]`` (input-image pixels), ``labels`` ``Tensor[M]``
                in ``0 .. num_classes - 1``, optional ``ignore_boxes`` ``Tensor[K, 4]``.

        Returns:
            An :class:`AnchorTargets`.
        """
        device = anchors.device
        self.check_targets(targets)
        gt_inds, gt_labels_all, matched = [], [], []
        for target in targets:
            gt_boxes = target['boxes'].to(device=device, dtype=anchors.dtype).reshape(-1, 4)
            gt_labels = target['labels'].to(device=device, dtype=torch.long).reshape(-1)
            ignore = target.get('ignore_boxes')
            if ignore is not None:
                ignore = ignore.to(device=device, dtype=anchors.dtype).reshape(-1, 4)
            result = self.assigner.assign(anchors, gt_boxes, gt_labels, ignore)
            gt_inds.append(result.gt_inds)
            gt_labels_all.append(result.labels)
            # every anchor's assigned box (a dummy where not positive), so that the batch is indexed once below
            matched.append(gt_boxes[(result.gt_inds - 1).clamp(min=0)] if len(gt_boxes) else torch.zeros_like(anchors))
        gt_inds = torch.stack(gt_inds)  # (N, A)
        pos_mask = gt_inds > 0
        neg_mask = gt_inds == 0
        labels = torch.where(pos_mask, torch.stack(gt_labels_all), self.num_classes)  # (N, A)
        pos_anchors = anchors.expand(len(targets), -1, -1)[pos_mask]  # (P, 4), pos_mask's row-major order
        pos_gt_boxes = torch.stack(matched)[pos_mask]  # (P, 4)
        return AnchorTargets(labels, pos_mask, neg_mask, pos_anchors, pos_gt_boxes)

    def bbox_loss(self, deltas: Tensor, targets: AnchorTargets, avg_factor: Tensor | float) -> Tensor:
        """The box loss of the positive anchors.

        Args:
            deltas: ``Tensor[N, A, 4]`` predicted deltas of every anchor.
            targets: from :meth:`get_targets`.
            avg_factor: the loss is summed and divided by this (the number of positives in the batch).
        """
        pos_deltas = deltas[targets.pos_mask]  # (P, 4)
        if getattr(self.loss_bbox, 'decodes_boxes', False):
            return self.loss_bbox(self.bbox_coder.decode(targets.pos_anchors, pos_deltas), targets.pos_gt_boxes,
                                  avg_factor=avg_factor)
        bbox_targets = self.bbox_coder.encode(targets.pos_anchors, targets.pos_gt_boxes)
        return self.loss_bbox(pos_deltas, bbox_targets, avg_factor=avg_factor)

    def check_targets(self, targets: Sequence[Mapping[str, Tensor]]) -> None:
        """Raise a ``ValueError`` naming the image for missing keys, malformed boxes or labels out of range."""
        for i, target in enumerate(targets):
            if 'boxes' not in target or 'labels' not in target:
                raise ValueError(f'targets[{i}] must have "boxes" and "labels", got keys {sorted(target)}')
            boxes, labels = target['boxes'], target['labels']
            if boxes.numel() and (boxes.dim() != 2 or boxes.shape[1] != 4):
                raise ValueError(f'targets[{i}]["boxes"] must have shape (M, 4), got {tuple(boxes.shape)}')
            if boxes.reshape(-1, 4).shape[0] != labels.numel():
                raise ValueError(f'targets[{i}] has {boxes.reshape(-1, 4).shape[0]} boxes but {labels.numel()} '
                                 'labels')
        all_labels = [t['labels'].reshape(-1) for t in targets if t['labels'].numel()]
        if all_labels:
            all_labels = torch.cat([lab.to(all_labels[0].device) for lab in all_labels])
            lo, hi = int(all_labels.min()), int(all_labels.max())
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(f'target labels must be in 0..{self.num_classes - 1} (num_classes='
                                 f'{self.num_classes}; the background index {self.num_classes} is implicit), got '
                                 f'labels from {lo} to {hi}')

    # ----------------------------------------------------------------------------------------------- inference
    def class_scores(self, logits: Tensor) -> Tensor:
        """``Tensor[..., cls_out_channels]`` logits -> ``Tensor[..., num_classes]`` foreground scores."""
        if self.use_sigmoid:
            return logits.sigmoid()
        return logits.softmax(dim=-1)[..., :-1]  # background last

    @torch.no_grad()
    def predict(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor],
                metas: Sequence[Mapping] | None = None, *, rescale: bool = True,
                test_cfg: TestConfig | Mapping[str, Any] | None = None) -> list[dict[str, Tensor]]:
        """Detections of every image, post-processed with ``test_cfg``.

        Per image and level, the (anchor, class) pairs scoring above ``score_thr`` are kept, at most the
        ``nms_pre`` best (per level, as mmdetection and torchvision's RetinaNet); their boxes are decoded and clipped
        to the input image (``img_shape``); with ``nms_pre_per_class`` only the best of each class over all levels
        stay (torchvision's SSD); with ``rescale`` they are mapped to the original image and clipped to it; boxes
        not wider and taller than ``min_bbox_size`` go; then class-aware NMS (or soft-NMS), at most
        ``max_per_class`` per class and the best ``max_per_img``.

        Args:
            cls_scores: per-level logits from ``forward``.
            bbox_preds: per-level deltas from ``forward``.
            metas: one dict per image with ``img_shape`` ``(h, w)`` (the input image before padding; boxes are not
                clipped in the input when it is missing) and, for ``rescale``, ``scale_factor`` ``(sx, sy)`` and
                ``ori_shape`` ``(h, w)``.
            rescale: return boxes in original-image pixels (else input-image pixels).
            test_cfg: a :class:`~detkit.models.utils.postprocess.TestConfig` or a dict of its keys (missing keys
                keep the head's ``default_test_cfg``).

        Returns:
            One dict per image: ``boxes`` ``Tensor[K, 4]``, ``scores`` ``Tensor[K]``, ``labels`` ``Tensor[K]``
            int64 in ``0 .. num_classes - 1``, by descending score.
        """
        cfg = TestConfig.from_cfg(test_cfg, self.test_cfg)
        num_imgs = cls_scores[0].shape[0]
        metas = [{}] * num_imgs if metas is None else list(metas)
        if len(metas) != num_imgs:
            raise ValueError(f'got {len(metas)} metas for a batch of {num_imgs} images')
        anchors = self.anchors(cls_scores)  # checks the feature-map sizes
        level_sizes = [a.shape[0] for a in anchors]
        logits = flatten_levels(cls_scores, self.cls_out_channels)  # (N, A, C or C + 1)
        # a softmax needs every logit of an anchor; a sigmoid only the candidates' (see _candidates)
        scores = logits if self.use_sigmoid else self.class_scores(logits)  # (N, A, C)
        deltas = flatten_levels(bbox_preds, 4)  # (N, A, 4)
        results = []
        for i, meta in enumerate(metas):
            img_shape = self._input_shape(meta)
            boxes, box_scores, labels = [], [], []
            for level_anchors, level_scores, level_deltas in zip(
                    anchors, scores[i].split(level_sizes), deltas[i].split(level_sizes)):
                cand_scores, cand = self._candidates(level_scores, cfg.score_thr)  # (K,), (K, 2): anchor, class
                if 0 < cfg.nms_pre < cand_scores.numel():
                    cand_scores, top = cand_scores.topk(cfg.nms_pre)
                    cand = cand[top]
                anchor_idx, cls = cand[:, 0], cand[:, 1]
                boxes.append(self.bbox_coder.decode(level_anchors[anchor_idx], level_deltas[anchor_idx],
                                                    max_shape=img_shape))
                box_scores.append(cand_scores)
                labels.append(cls)
            boxes, box_scores, labels = torch.cat(boxes), torch.cat(box_scores), torch.cat(labels)
            if cfg.nms_pre_per_class > 0:
                keep = top_k_per_class(box_scores, labels, cfg.nms_pre_per_class)
                boxes, box_scores, labels = boxes[keep], box_scores[keep], labels[keep]
            if rescale:
                boxes = self._to_original(boxes, meta, i)
            if cfg.min_bbox_size >= 0:
                wh = boxes[:, 2:] - boxes[:, :2]
                valid = (wh > cfg.min_bbox_size).all(dim=1)
                boxes, box_scores, labels = boxes[valid], box_scores[valid], labels[valid]
            boxes, box_scores, labels = multiclass_nms(boxes, box_scores, labels, cfg.nms, cfg.max_per_class,
                                                       cfg.max_per_img)
            results.append({'boxes': boxes, 'scores': box_scores, 'labels': labels})
        return results

    def _candidates(self, level_scores: Tensor, score_thr: float) -> tuple[Tensor, Tensor]:
        """The (anchor, class) pairs of one level whose score is above ``score_thr``: ``(scores (K,), (K, 2))``.

        ``level_scores`` are scores for a softmax head and logits for a sigmoid one. The sigmoid is monotonic, so
        logits below ``logit(score_thr)`` (less a margin for rounding) are dropped before any sigmoid is computed:
        at 800x800 RetinaNet has 11 million (anchor, class) logits, of which a trained model scores a few thousand
        above 0.05. The survivors are then tested on their float scores, exactly as without the shortcut.
        """
        if not self.use_sigmoid:
            keep = level_scores > score_thr  # (A_l, C)
            return level_scores[keep], keep.nonzero()
        if score_thr > 0:
            logit_thr = math.log(score_thr / (1 - score_thr)) - 1e-3
            cand = (level_scores > logit_thr).nonzero()  # (K', 2)
            cand_scores = level_scores[cand[:, 0], cand[:, 1]].sigmoid()
            exact = cand_scores > score_thr
            return cand_scores[exact], cand[exact]
        keep_scores = level_scores.sigmoid()
        keep = keep_scores > score_thr
        return keep_scores[keep], keep.nonzero()

    def _input_shape(self, meta: Mapping) -> tuple[int, int] | None:
        """``(h, w)`` of the input image to clip to: the meta's ``img_shape``, else the anchors' input size."""
        if 'img_shape' in meta:
            return tuple(meta['img_shape'])[:2]
        size = getattr(self.anchor_generator, 'input_size', None)
        if size is None:
            return None
        return (size, size) if isinstance(size, int) else tuple(size)

    @staticmethod
    def _to_original(boxes: Tensor, meta: Mapping, index: int) -> Tensor:
        """Input-image boxes -> original-image boxes: undo ``scale_factor`` and clip to ``ori_shape``."""
        if 'scale_factor' not in meta or 'ori_shape' not in meta:
            raise ValueError(f'rescale=True needs "scale_factor" (sx, sy) and "ori_shape" (h, w) in metas[{index}], '
                             f'got keys {sorted(meta)}; pass rescale=False for input-image boxes')
        sx, sy = meta['scale_factor'][:2]
        h, w = meta['ori_shape'][:2]
        boxes = boxes / boxes.new_tensor([sx, sy, sx, sy])
        boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=h)
        return boxes
