"""SSD's head (and M2Det's): per-level conv predictors and the MultiBox loss with hard negative mining."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.registry import MODELS

from ..utils.layers import ConvNormAct, init_conv_xavier, init_norm_constant
from .anchor_head import AnchorHead, flatten_levels

__all__ = ['SSDHead', 'flatten_levels']


@MODELS.register_module()
class SSDHead(AnchorHead):
    """SSD head: a classification and a box-regression conv on every feature level, softmax over classes.

    Also M2Det's head: M2Det predicts with the same per-level 3x3 convs and MultiBox loss on the MLFPN's maps, with
    its own anchors (``SSDAnchorGenerator(size_pattern=...)``).

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
        anchor_generator: an :class:`SSDAnchorGenerator` (or any anchor generator) or its config.
        bbox_coder: a box coder or its config; default ``DeltaXYWHBBoxCoder`` with SSD's stds
            ``(0.1, 0.1, 0.2, 0.2)``.
        assigner: an assigner or its config; default SSD's ``MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.5,
            min_pos_iou=0.0, gt_max_assign_all=False)``.
        loss_cls: the classification loss; default softmax ``CrossEntropyLoss`` (a sigmoid loss is refused: hard
            negative mining ranks the background probability).
        loss_bbox: the box loss; default ``SmoothL1Loss(beta=1.0)``.
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
    """

    default_test_cfg = dict(score_thr=0.02, nms_pre=1000, min_bbox_size=0.0,
                            nms=dict(type='nms', iou_threshold=0.45), max_per_img=200)

    def __init__(self, num_classes: int, in_channels: Sequence[int], anchor_generator: Any,
                 bbox_coder: Any = None, assigner: Any = None, loss_cls: Any = None, loss_bbox: Any = None,
                 use_depthwise: bool = False, act: str = 'relu6', bn_eps: float = 1e-5, bn_momentum: float = 0.1,
                 neg_pos_ratio: float = 3.0, neg_per_empty_img: int = 3) -> None:
        super().__init__(
            num_classes, in_channels, anchor_generator=anchor_generator,
            bbox_coder=bbox_coder or dict(type='DeltaXYWHBBoxCoder', target_stds=(0.1, 0.1, 0.2, 0.2)),
            assigner=assigner or dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0,
                                      gt_max_assign_all=False),
            loss_cls=loss_cls or dict(type='CrossEntropyLoss'),
            loss_bbox=loss_bbox or dict(type='SmoothL1Loss', beta=1.0))
        if self.use_sigmoid:
            raise ValueError('SSDHead: loss_cls must be a softmax loss (use_sigmoid=False): hard negative mining '
                             'ranks anchors by their background loss')
        if neg_pos_ratio < 0 or neg_per_empty_img < 0:
            raise ValueError(f'neg_pos_ratio ({neg_pos_ratio}) and neg_per_empty_img ({neg_per_empty_img}) must not '
                             'be negative')
        self.neg_pos_ratio = float(neg_pos_ratio)
        self.neg_per_empty_img = int(neg_per_empty_img)
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for ch, a in zip(self.in_channels, self.num_base_priors):
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
        t = self.get_targets(anchors, targets)

        # classification: the positives and, per image, the negatives with the highest background loss
        num_pos = t.pos_mask.sum(dim=1)  # (N,)
        num_neg = torch.where(num_pos > 0, (num_pos * self.neg_pos_ratio).long(),
                              torch.full_like(num_pos, self.neg_per_empty_img))
        num_neg = torch.minimum(num_neg, t.neg_mask.sum(dim=1))  # an image may have fewer negatives than asked
        neg_mined = self.mine_hard_negatives(logits.detach(), t.neg_mask, num_neg)  # (N, A) bool
        # the cross-entropy (and its backward) only for the kept anchors, a few hundred rows instead of N * A; one
        # gather so that the backward scatters into one zero tensor
        kept = (t.pos_mask | neg_mined).view(-1).nonzero().squeeze(1)  # flat indices into N * A
        kept_logits = logits.reshape(-1, self.cls_out_channels).index_select(0, kept)  # (K, C + 1)
        kept_labels = t.labels.view(-1).index_select(0, kept)  # background for the mined negatives
        normaliser = num_pos.sum().clamp(min=1).to(logits.dtype)
        loss_cls = self.loss_cls(kept_logits, kept_labels, avg_factor=normaliser)
        loss_bbox = self.bbox_loss(deltas, t, avg_factor=normaliser)  # positives only
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
