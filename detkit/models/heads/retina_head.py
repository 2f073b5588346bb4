"""RetinaNet's head (Lin et al., ICCV 2017): two conv towers shared across levels, focal loss."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detkit.registry import MODELS

from ..utils.layers import ConvNormAct
from .anchor_head import AnchorHead, flatten_levels

__all__ = ['RetinaHead']


@MODELS.register_module()
class RetinaHead(AnchorHead):
    """RetinaNet head: a classification tower and a box tower of ``stacked_convs`` 3x3 convs + ReLU, shared by all
    pyramid levels, each ending in a 3x3 predictor conv.

    Scores are per-class sigmoids (no background channel); the classification bias starts at
    ``-log((1 - prior_prob) / prior_prob)``, so every anchor first predicts ``prior_prob`` (0.01) and the
    many easy negatives do not swamp the first iterations. Module names follow mmdetection (``cls_convs.i.conv``,
    ``reg_convs.i.conv``, ``retina_cls``, ``retina_reg``), so its checkpoints map 1:1.

    The loss (:meth:`loss`) is the focal loss over every positive and negative anchor (ignored anchors, with an IoU
    between ``neg_iou_thr`` and ``pos_iou_thr``, count in neither) plus the box loss of the positives, both
    divided by the number of positive anchors in the batch.

    Args:
        num_classes: foreground classes.
        in_channels: channels of each level (the detector fills them from the neck); all levels must have the same
            channels, since the towers are shared.
        anchor_generator: default RetinaNet's: ``AnchorGenerator(octave_base_scale=4, scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128])``, 9 anchors per location.
        bbox_coder: default ``DeltaXYWHBBoxCoder`` with stds ``(1, 1, 1, 1)``.
        assigner: default ``MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)``.
        loss_cls: default ``FocalLoss(gamma=2.0, alpha=0.25)``.
        loss_bbox: default ``L1Loss()`` on deltas; ``GIoULoss`` compares decoded boxes instead.
        stacked_convs: convs in each tower (4).
        feat_channels: channels of the towers (256).
        prior_prob: the foreground probability every anchor starts from.
        norm: batch norm in the towers (bias-free convs); RetinaNet has none.
    """

    default_test_cfg = dict(score_thr=0.05, nms_pre=1000, min_bbox_size=0.0,
                            nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)

    def __init__(self, num_classes: int, in_channels: Sequence[int], anchor_generator: Any = None,
                 bbox_coder: Any = None, assigner: Any = None, loss_cls: Any = None, loss_bbox: Any = None,
                 stacked_convs: int = 4, feat_channels: int = 256, prior_prob: float = 0.01,
                 norm: bool = False) -> None:
        super().__init__(
            num_classes, in_channels,
            anchor_generator=anchor_generator or dict(type='AnchorGenerator', octave_base_scale=4,
                                                      scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                                      strides=[8, 16, 32, 64, 128]),
            bbox_coder=bbox_coder or dict(type='DeltaXYWHBBoxCoder', target_stds=(1.0, 1.0, 1.0, 1.0)),
            assigner=assigner or dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0),
            loss_cls=loss_cls or dict(type='FocalLoss', gamma=2.0, alpha=0.25),
            loss_bbox=loss_bbox or dict(type='L1Loss'))
        if not self.use_sigmoid:
            raise ValueError('RetinaHead: loss_cls must be a sigmoid loss (FocalLoss or CrossEntropyLoss with '
                             'use_sigmoid=True); it has no background channel')
        if len(set(self.in_channels)) != 1:
            raise ValueError(f'RetinaHead shares its convs across levels, so every level needs the same channels; got '
                             f'in_channels={self.in_channels} (use a neck such as FPN that outputs equal channels)')
        if stacked_convs < 0 or feat_channels < 1 or not 0 < prior_prob < 1:
            raise ValueError(f'RetinaHead: stacked_convs ({stacked_convs}) >= 0, feat_channels ({feat_channels}) >= 1 '
                             f'and 0 < prior_prob ({prior_prob}) < 1 are required')
        self.prior_prob = float(prior_prob)
        num_anchors = self.num_base_priors[0]
        if any(a != num_anchors for a in self.num_base_priors):
            raise ValueError(f'RetinaHead shares its predictor across levels, so every level needs the same number '
                             f'of anchors per location; got {self.num_base_priors}')
        in_ch = self.in_channels[0]
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for i in range(stacked_convs):
            ch = in_ch if i == 0 else feat_channels
            self.cls_convs.append(ConvNormAct(ch, feat_channels, 3, padding=1, norm=norm))
            self.reg_convs.append(ConvNormAct(ch, feat_channels, 3, padding=1, norm=norm))
        tower_out = feat_channels if stacked_convs else in_ch
        self.retina_cls = nn.Conv2d(tower_out, num_anchors * self.cls_out_channels, 3, padding=1)
        self.retina_reg = nn.Conv2d(tower_out, num_anchors * 4, 3, padding=1)
        self.init_weights()

    def init_weights(self) -> None:
        """Normal(0, 0.01) convs with zero bias, the classifier's bias at the prior (the paper, mmdetection and
        torchvision alike)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.retina_cls.bias, -math.log((1 - self.prior_prob) / self.prior_prob))

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Raw predictions of every level.

        Args:
            feats: one ``Tensor[N, C, H_l, W_l]`` per level.

        Returns:
            ``cls_scores``: one ``Tensor[N, A * num_classes, H_l, W_l]`` logits per level; ``bbox_preds``: one
            ``Tensor[N, A * 4, H_l, W_l]`` per level. Channel ``a * K + k`` is value ``k`` of anchor ``a``.
        """
        if len(feats) != len(self.num_base_priors):
            raise ValueError(f'RetinaHead has {len(self.num_base_priors)} anchor levels but got {len(feats)} feature '
                             'maps')
        cls_scores, bbox_preds = [], []
        for x in feats:
            cls_feat, reg_feat = x, x
            for conv in self.cls_convs:
                cls_feat = conv(cls_feat)
            for conv in self.reg_convs:
                reg_feat = conv(reg_feat)
            cls_scores.append(self.retina_cls(cls_feat))
            bbox_preds.append(self.retina_reg(reg_feat))
        return cls_scores, bbox_preds

    def loss(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor],
             targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """RetinaNet's loss over a batch.

        Args:
            cls_scores: per-level logits from :meth:`forward`.
            bbox_preds: per-level deltas from :meth:`forward`.
            targets: one dict per image: ``boxes`` ``Tensor[M, 4]`` in input-image pixels, ``labels`` ``Tensor[M]``
                in ``0 .. num_classes - 1``, optional ``ignore_boxes`` ``Tensor[K, 4]``.

        Returns:
            ``loss_cls`` (focal loss of the positive and negative anchors) and ``loss_bbox`` (of the positives),
            scalars normalised by the number of positive anchors in the batch (at least 1).
        """
        num_imgs = cls_scores[0].shape[0]
        if len(targets) != num_imgs:
            raise ValueError(f'got {len(targets)} targets for a batch of {num_imgs} images')
        anchors = torch.cat(self.anchors(cls_scores))  # (A, 4)
        logits = flatten_levels(cls_scores, self.cls_out_channels)  # (N, A, C)
        deltas = flatten_levels(bbox_preds, 4)  # (N, A, 4)
        t = self.get_targets(anchors, targets)
        num_pos = t.pos_mask.sum().clamp(min=1).to(logits.dtype)
        valid = t.pos_mask | t.neg_mask  # ignored anchors are in no loss
        # negatives carry the label num_classes: an all-zero target row
        loss_cls = self.loss_cls(logits[valid], t.labels[valid], avg_factor=num_pos)
        loss_bbox = self.bbox_loss(deltas, t, avg_factor=num_pos)
        return {'loss_cls': loss_cls, 'loss_bbox': loss_bbox}
