"""SSD's head: per-level conv predictors, the MultiBox loss and post-processing."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.ops import batched_nms
from detkit.registry import MODELS, TASK_UTILS
from detkit.task_modules import DeltaXYWHBBoxCoder, MaxIoUAssigner, SSDAnchorGenerator

from ..utils.layers import ConvNormAct, init_conv_xavier, init_norm_constant

__all__ = ['SSDHead']


def _build(cfg: object) -> object:
    """An object given as such, or built from its config by the TASK_UTILS registry."""
    return TASK_UTILS.build(cfg) if isinstance(cfg, Mapping) else cfg


def flatten_levels(maps: Sequence[Tensor], k: int) -> Tensor:
    """Per-level ``Tensor[N, A_l * k, H_l, W_l]`` -> ``Tensor[N, sum_l H_l * W_l * A_l, k]``.

    Row ``(i * W_l + j) * A_l + a`` of level ``l`` is anchor ``a`` at location ``(i, j)``, the anchor generator's
    order, because channel ``a * k + c`` of the conv output is value ``c`` of anchor ``a``.
    """
    n = maps[0].shape[0]
    return torch.cat([m.permute(0, 2, 3, 1).reshape(n, -1, k) for m in maps], dim=1)  # (N, HWA, k)


@MODELS.register_module()
class SSDHead(nn.Module):
    """SSD head: a classification and a box-regression conv on every feature level, softmax over classes.

    Every anchor gets ``num_classes + 1`` logits; **the background is the last index, ``num_classes``**
    (foreground labels are ``0 .. num_classes - 1``, as in mmdetection; torchvision puts it first). Box outputs are
    :class:`~detkit.task_modules.DeltaXYWHBBoxCoder` deltas relative to the anchors of
    :class:`~detkit.task_modules.SSDAnchorGenerator`.

    The loss (:meth:`loss`) is SSD's MultiBox loss: cross-entropy on the positive anchors plus the
    ``neg_pos_ratio`` times as many negative anchors with the highest loss (hard negative mining, per image), and
    Smooth L1 on the positive anchors' deltas, both divided by the number of positive anchors in the batch.

    Args:
        num_classes: foreground classes (20 for VOC, 80 for COCO).
        in_channels: channels of each input level (the detector fills them from the neck's ``out_channels``).
        anchor_generator: an :class:`SSDAnchorGenerator` or its config.
        bbox_coder: a box coder or its config; default ``DeltaXYWHBBoxCoder`` with SSD's stds
            ``(0.1, 0.1, 0.2, 0.2)``.
        assigner: an assigner or its config; default SSD's ``MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.5,
            min_pos_iou=0.0, gt_max_assign_all=False)``.
        use_depthwise: SSDLite predictors: a 3x3 depthwise conv (+ batch norm + ``act``) and a 1x1 conv, instead
            of one 3x3 conv.
        act: activation of the depthwise conv.
        bn_eps: batch norm epsilon of the depthwise conv.
        bn_momentum: batch norm momentum of the depthwise conv.
        neg_pos_ratio: hard negatives mined per positive anchor of an image.
        neg_per_empty_img: hard negatives mined in an image without a positive anchor (a background-only image),
            so it still teaches the background. With SSD's assigner every ground-truth box has a positive anchor,
            so images with objects are unaffected; 0 reproduces torchvision and mmdetection, which learn nothing
            from such images.
        smoothl1_beta: the Smooth L1 transition point (1.0 in SSD; 0 gives L1).
    """

    def __init__(self, num_classes: int, in_channels: Sequence[int], anchor_generator: SSDAnchorGenerator | dict,
                 bbox_coder: DeltaXYWHBBoxCoder | dict | None = None, assigner: MaxIoUAssigner | dict | None = None,
                 use_depthwise: bool = False, act: str = 'relu6', bn_eps: float = 1e-5, bn_momentum: float = 0.1,
                 neg_pos_ratio: float = 3.0, neg_per_empty_img: int = 3, smoothl1_beta: float = 1.0) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'num_classes must be a positive int (foreground classes), got {num_classes!r}')
        if neg_pos_ratio < 0 or neg_per_empty_img < 0 or smoothl1_beta < 0:
            raise ValueError(f'neg_pos_ratio ({neg_pos_ratio}), neg_per_empty_img ({neg_per_empty_img}) and '
                             f'smoothl1_beta ({smoothl1_beta}) must not be negative')
        self.num_classes = num_classes
        self.cls_out_channels = num_classes + 1  # + background, the last index
        self.in_channels = tuple(in_channels)
        self.anchor_generator = _build(anchor_generator)
        if bbox_coder is None:
            bbox_coder = DeltaXYWHBBoxCoder(target_stds=(0.1, 0.1, 0.2, 0.2))
        self.bbox_coder = _build(bbox_coder)
        if assigner is None:
            assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0, gt_max_assign_all=False)
        self.assigner = _build(assigner)
        self.neg_pos_ratio = float(neg_pos_ratio)
        self.neg_per_empty_img = int(neg_per_empty_img)
        self.smoothl1_beta = float(smoothl1_beta)

        num_anchors = self.anchor_generator.num_base_priors
        if len(num_anchors) != len(self.in_channels):
            raise ValueError(f'in_channels gives {len(self.in_channels)} levels {self.in_channels} but the anchor '
                             f'generator has {len(num_anchors)} levels (anchors per location {num_anchors})')
        self.num_base_priors = num_anchors
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for ch, a in zip(self.in_channels, num_anchors):
            self.cls_convs.append(self._predictor(ch, a * self.cls_out_channels, use_depthwise, act, bn_eps,
                                                  bn_momentum))
            self.reg_convs.append(self._predictor(ch, a * 4, use_depthwise, act, bn_eps, bn_momentum))
        self.init_weights()

    @staticmethod
    def _predictor(in_ch: int, out_ch: int, use_depthwise: bool, act: str, bn_eps: float,
                   bn_momentum: float) -> nn.Module:
        if not use_depthwise:
            return nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        return nn.Sequential(
            ConvNormAct(in_ch, in_ch, 3, padding=1, groups=in_ch, norm=True, act=act, bn_eps=bn_eps,
                        bn_momentum=bn_momentum),
            nn.Conv2d(in_ch, out_ch, kernel_size=1))

    def init_weights(self) -> None:
        """Xavier-uniform convs with zero bias (SSD, torchvision, mmdetection), unit batch norms."""
        init_conv_xavier(self)
        init_norm_constant(self)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Raw predictions of every level.

        Args:
            feats: one ``Tensor[N, C_l, H_l, W_l]`` per level.

        Returns:
            ``cls_scores``: one ``Tensor[N, A_l * (num_classes + 1), H_l, W_l]`` logits per level;
            ``bbox_preds``: one ``Tensor[N, A_l * 4, H_l, W_l]`` per level. Channel ``a * K + k`` is value ``k``
            of anchor ``a``.
        """
        if len(feats) != len(self.cls_convs):
            raise ValueError(f'SSDHead has {len(self.cls_convs)} levels but got {len(feats)} feature maps')
        cls_scores = [conv(f) for conv, f in zip(self.cls_convs, feats)]
        bbox_preds = [conv(f) for conv, f in zip(self.reg_convs, feats)]
        return cls_scores, bbox_preds

    def anchors(self, cls_scores: Sequence[Tensor]) -> list[Tensor]:
        """Anchors of every level for these outputs, ``Tensor[H_l * W_l * A_l, 4]`` in input-image pixels.

        Raises:
            ValueError: naming the expected and actual feature-map sizes when the input was not the size the
                anchors were made for.
        """
        featmap_sizes = [tuple(s.shape[-2:]) for s in cls_scores]
        return self.anchor_generator.grid_priors(featmap_sizes, dtype=cls_scores[0].dtype,
                                                 device=cls_scores[0].device)

    # ------------------------------------------------------------------------------------------------ training
    def loss(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor],
             targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """SSD's MultiBox loss over a batch.

        Args:
            cls_scores: per-level logits from :meth:`forward`.
            bbox_preds: per-level deltas from :meth:`forward`.
            targets: one dict per image: ``boxes`` ``Tensor[M, 4]`` in input-image pixels, ``labels`` ``Tensor[M]``
                in ``0 .. num_classes - 1``, optional ``ignore_boxes`` ``Tensor[K, 4]``.

        Returns:
            ``loss_cls`` (cross-entropy of positives and mined negatives) and ``loss_bbox`` (Smooth L1 of the
            positives), scalars normalised by the number of positive anchors in the batch (at least 1).
        """
        num_imgs = cls_scores[0].shape[0]
        if len(targets) != num_imgs:
            raise ValueError(f'got {len(targets)} targets for a batch of {num_imgs} images')
        anchors = torch.cat(self.anchors(cls_scores))  # (A, 4)
        logits = flatten_levels(cls_scores, self.cls_out_channels)  # (N, A, C + 1)
        deltas = flatten_levels(bbox_preds, 4)  # (N, A, 4)
        labels, pos_mask, neg_mask, pos_bbox_targets = self.get_targets(anchors, targets)

        # classification: the positives and, per image, the negatives with the highest background loss
        num_pos = pos_mask.sum(dim=1)  # (N,)
        num_neg = torch.where(num_pos > 0, (num_pos * self.neg_pos_ratio).long(),
                              torch.full_like(num_pos, self.neg_per_empty_img))
        num_neg = torch.minimum(num_neg, neg_mask.sum(dim=1))  # an image may have fewer negatives than asked
        neg_mined = self.mine_hard_negatives(logits.detach(), neg_mask, num_neg)  # (N, A) bool
        # the cross-entropy (and its backward) only for the kept anchors, a few hundred rows instead of N * A; one
        # gather so that the backward scatters into one zero tensor
        kept = (pos_mask | neg_mined).view(-1).nonzero().squeeze(1)  # flat indices into N * A
        kept_logits = logits.reshape(-1, self.cls_out_channels).index_select(0, kept)  # (K, C + 1)
        kept_labels = labels.view(-1).index_select(0, kept)  # background for the mined negatives
        normaliser = num_pos.sum().clamp(min=1).to(logits.dtype)
        loss_cls = F.cross_entropy(kept_logits, kept_labels, reduction='sum') / normaliser

        # regression: positives only
        loss_bbox = F.smooth_l1_loss(deltas[pos_mask], pos_bbox_targets.to(deltas.dtype), beta=self.smoothl1_beta,
                                     reduction='sum') / normaliser
        return {'loss_cls': loss_cls, 'loss_bbox': loss_bbox}

    @torch.no_grad()
    def mine_hard_negatives(self, logits: Tensor, neg_mask: Tensor, num_neg: Tensor) -> Tensor:
        """The ``num_neg[i]`` negatives of image ``i`` with the highest background cross-entropy.

        Selection needs no gradient, so it ranks with a detached background loss; the caller computes the
        differentiable loss of the kept anchors only. One top-k for the batch (k = the largest request) replaces a
        sort of every image's anchors.

        Args:
            logits: ``Tensor[N, A, C + 1]``.
            neg_mask: ``Tensor[N, A]`` bool, the negative anchors.
            num_neg: ``Tensor[N]`` negatives to keep per image, at most ``neg_mask.sum(1)``.

        Returns:
            ``Tensor[N, A]`` bool, the kept negatives.
        """
        mined = torch.zeros_like(neg_mask)
        max_neg = int(num_neg.max()) if num_neg.numel() else 0
        if max_neg == 0:
            return mined
        # -log_softmax is one fused pass, cheaper than logsumexp's four
        bg_loss = -F.log_softmax(logits, dim=-1)[..., self.num_classes]  # (N, A), >= 0
        # -1 ranks positives and ignored anchors below every negative; num_neg <= the negatives available
        hardest = bg_loss.masked_fill(~neg_mask, -1.0).topk(max_neg, dim=1).indices  # (N, k)
        take = torch.arange(max_neg, device=logits.device)[None, :] < num_neg[:, None]  # first num_neg[i] of row i
        return mined.scatter_(1, hardest, take)

    @torch.no_grad()
    def get_targets(self, anchors: Tensor,
                    targets: Sequence[Mapping[str, Tensor]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Assign the anchors of every image and encode the positives' regression targets.

        Args:
            anchors: ``Tensor[A, 4]`` in input-image pixels.
            targets: as in :meth:`loss`.

        Returns:
            ``labels`` ``Tensor[N, A]`` int64 (``num_classes`` = background for every non-positive anchor),
            ``pos_mask`` and ``neg_mask`` ``Tensor[N, A]`` bool (ignored anchors are in neither), and
            ``pos_bbox_targets`` ``Tensor[P, 4]``: the deltas of the ``P = pos_mask.sum()`` positives, in
            ``pos_mask``'s row-major order.
        """
        device = anchors.device
        self._check_labels(targets)
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
        pos_bbox_targets = self.bbox_coder.encode(pos_anchors, torch.stack(matched)[pos_mask])  # (P, 4)
        return labels, pos_mask, neg_mask, pos_bbox_targets

    def _check_labels(self, targets: Sequence[Mapping[str, Tensor]]) -> None:
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
    @torch.no_grad()
    def predict(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor],
                metas: Sequence[Mapping] | None = None, *, rescale: bool = True, score_thr: float = 0.02,
                nms_pre: int = 1000, iou_threshold: float = 0.45, max_per_img: int = 200,
                min_bbox_size: float = 0.0) -> list[dict[str, Tensor]]:
        """Detections of every image: score threshold, top-k per level, decoding, class-aware NMS.

        Per image and level, the (anchor, class) pairs whose softmax score is above ``score_thr`` are kept, at
        most the ``nms_pre`` best of them (per level, as mmdetection); their boxes are decoded and clipped to the
        input image; with ``rescale`` they are mapped to the original image and clipped to it; boxes not wider and
        taller than ``min_bbox_size`` are dropped; class-aware NMS at ``iou_threshold`` and the ``max_per_img``
        best remain.

        Args:
            cls_scores: per-level logits from :meth:`forward`.
            bbox_preds: per-level deltas from :meth:`forward`.
            metas: one dict per image with ``img_shape`` ``(h, w)`` (input image before padding; default the
                input's size) and, for ``rescale``, ``scale_factor`` ``(sx, sy)`` and ``ori_shape`` ``(h, w)``.
            rescale: return boxes in original-image pixels (else input-image pixels).
            score_thr: smallest class score kept.
            nms_pre: candidates kept per level before NMS.
            iou_threshold: NMS IoU threshold.
            max_per_img: detections kept per image.
            min_bbox_size: boxes must be wider and taller than this (pixels of the returned image); negative to
                keep even empty boxes.

        Returns:
            One dict per image: ``boxes`` ``Tensor[K, 4]``, ``scores`` ``Tensor[K]``, ``labels`` ``Tensor[K]``
            int64 in ``0 .. num_classes - 1``, by descending score.
        """
        num_imgs = cls_scores[0].shape[0]
        metas = [{}] * num_imgs if metas is None else list(metas)
        if len(metas) != num_imgs:
            raise ValueError(f'got {len(metas)} metas for a batch of {num_imgs} images')
        anchors = self.anchors(cls_scores)  # checks that the input had the anchors' size
        input_shape = (self.anchor_generator.input_size,) * 2
        level_sizes = [a.shape[0] for a in anchors]
        scores = flatten_levels(cls_scores, self.cls_out_channels).softmax(dim=-1)[..., :-1]  # (N, A, C)
        deltas = flatten_levels(bbox_preds, 4)  # (N, A, 4)
        results = []
        for i, meta in enumerate(metas):
            img_shape = tuple(meta.get('img_shape', input_shape))[:2]
            boxes, box_scores, labels = [], [], []
            for level_anchors, level_scores, level_deltas in zip(
                    anchors, scores[i].split(level_sizes), deltas[i].split(level_sizes)):
                keep = level_scores > score_thr  # (A_l, C)
                cand_scores = level_scores[keep]
                cand = keep.nonzero()  # (K, 2): anchor, class
                if cand_scores.numel() > nms_pre:
                    cand_scores, top = cand_scores.topk(nms_pre)
                    cand = cand[top]
                anchor_idx, cls = cand[:, 0], cand[:, 1]
                boxes.append(self.bbox_coder.decode(level_anchors[anchor_idx], level_deltas[anchor_idx],
                                                    max_shape=img_shape))
                box_scores.append(cand_scores)
                labels.append(cls)
            boxes, box_scores, labels = torch.cat(boxes), torch.cat(box_scores), torch.cat(labels)
            if rescale:
                boxes = self._to_original(boxes, meta, i)
            if min_bbox_size >= 0:
                wh = boxes[:, 2:] - boxes[:, :2]
                valid = (wh > min_bbox_size).all(dim=1)
                boxes, box_scores, labels = boxes[valid], box_scores[valid], labels[valid]
            keep = batched_nms(boxes, box_scores, labels, iou_threshold)[:max_per_img]
            results.append({'boxes': boxes[keep], 'scores': box_scores[keep], 'labels': labels[keep]})
        return results

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
