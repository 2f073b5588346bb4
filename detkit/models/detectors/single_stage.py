"""Backbone -> neck -> dense head: SSD, SSDLite and every other one-stage detector."""
from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from detkit.registry import MODELS, build_if_config

from ..utils.postprocess import TestConfig
from .feature_check import check_feature_maps

__all__ = ['SingleStageDetector']

def _build(cfg: nn.Module | Mapping, what: str, **filled: object) -> nn.Module:
    """Build a part from its config, filling ``filled`` keys (channel counts passed down the network).

    A filled key that the config also states must agree with it, so a config cannot silently disagree with the
    network it describes.
    """
    if isinstance(cfg, Mapping):
        cfg = dict(cfg)
        for key, value in filled.items():
            if key in cfg and cfg[key] is not None and _as_tuple(cfg[key]) != _as_tuple(value):
                raise ValueError(f'{what}.{key}={cfg[key]!r} disagrees with the {value!r} the previous part outputs; '
                                 f'leave {key} out of the {what} config, it is filled in')
            cfg[key] = value
    return build_if_config(cfg, MODELS, what)


def _as_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _head_train_args(bbox_head: Mapping, train_cfg: Mapping | None) -> dict:
    """``train_cfg`` entries as keyword arguments of the head (its assigner and loss hyper-parameters)."""
    if not train_cfg:
        return {}
    head_type = bbox_head.get('type')
    head_cls = MODELS.get(head_type) if isinstance(head_type, str) else head_type
    if not inspect.isclass(head_cls):
        return dict(train_cfg)  # an unknown type: let the registry's build say so, with close names
    accepted = set(inspect.signature(head_cls.__init__).parameters) - {'self'}
    unknown = sorted(set(train_cfg) - accepted)
    if unknown:
        raise ValueError(f'train_cfg keys {unknown} are not arguments of {head_cls.__name__}; train_cfg may hold '
                         f'{sorted(accepted)}')
    both = sorted(set(train_cfg) & set(bbox_head))
    if both:
        raise ValueError(f'{both} given in both train_cfg and bbox_head; give each once')
    return dict(train_cfg)


@MODELS.register_module()
class SingleStageDetector(nn.Module):
    """A one-stage detector: ``bbox_head(neck(backbone(images)))``.

    Channel counts flow down the network: the neck's ``in_channels`` are the backbone's ``out_channels`` and the
    head's ``in_channels`` the neck's ``out_channels``, so a config states each channel count once.

    Three entry points (docs/conventions.md):

    * ``detector(images)`` -> ``(cls_scores, bbox_preds)``, the head's raw per-level outputs;
    * ``detector.loss(images, targets)`` -> ``{'loss_cls': ..., 'loss_bbox': ...}``;
    * ``detector.predict(images, metas, rescale=True)`` -> one ``dict(boxes, scores, labels)`` per image
      (call ``detector.eval()`` first, as for any network with batch norm).

    Args:
        backbone: a backbone or its config (must have ``out_channels``).
        bbox_head: a dense head or its config.
        neck: an optional neck or its config (must have ``out_channels``).
        train_cfg: training-only arguments of the head, e.g. ``dict(assigner=dict(type='MaxIoUAssigner', ...),
            neg_pos_ratio=3, smoothl1_beta=1.0)``; they are passed to the head's constructor by name.
        test_cfg: post-processing (:class:`~detkit.models.utils.postprocess.TestConfig`): ``score_thr``,
            ``nms_pre``, ``nms_pre_per_class``, ``min_bbox_size``, ``nms=dict(type='nms', iou_threshold=...)`` or
            ``nms=dict(type='soft_nms', method='linear'|'gaussian', sigma=..., iou_threshold=..., min_score=...)``,
            ``max_per_class``, ``max_per_img``. Keys left out keep the head's ``default_test_cfg`` (its paper's
            setting).
        check_input_size: the input size (``(h, w)``) at which :func:`check_feature_maps` runs the network on
            shape-only tensors when it is built, so that a backbone, neck and anchors that do not fit together fail
            then, naming the mismatch; default the anchors' input size, or 640x640 for anchors that fit any size.
            ``False`` skips the check.
        channels_last: keep the conv weights and the input batch in ``torch.channels_last`` (NHWC) memory format,
            which oneDNN's CPU convolutions run faster (BENCHMARKS.md); results are those of the default layout up
            to float rounding.

    Attributes:
        dataset_meta: ``{'classes': (...)}`` of the dataset the model was trained on, when set (``None`` until).
        autocast_dtype: when set (``torch.bfloat16``, by :func:`detkit.apis.fast.make_fast`), :meth:`predict` runs
            the network under ``torch.autocast`` with this dtype and post-processes its outputs in float32.
    """

    def __init__(self, backbone: nn.Module | Mapping, bbox_head: nn.Module | Mapping,
                 neck: nn.Module | Mapping | None = None, train_cfg: Mapping | None = None,
                 test_cfg: Mapping | None = None, channels_last: bool = False,
                 check_input_size: Sequence[int] | bool | None = None) -> None:
        super().__init__()
        self.backbone = _build(backbone, 'backbone')
        channels = tuple(self.backbone.out_channels)
        self.neck = None
        if neck is not None:
            self.neck = _build(neck, 'neck', in_channels=channels)
            channels = tuple(self.neck.out_channels)
        if isinstance(bbox_head, Mapping):
            bbox_head = dict(bbox_head, **_head_train_args(bbox_head, train_cfg))
        elif train_cfg:
            raise ValueError('train_cfg only applies to a bbox_head given as a config; pass its arguments to the '
                             'head you built')
        self.bbox_head = _build(bbox_head, 'bbox_head', in_channels=channels)
        self.test_cfg = TestConfig.from_cfg(test_cfg, self.bbox_head.test_cfg)
        self.dataset_meta: dict | None = None
        self.channels_last = bool(channels_last)
        self.autocast_dtype: torch.dtype | None = None
        if check_input_size is not False:
            check_feature_maps(self, check_input_size)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)  # 4-d weights only; in-place inits and loads keep it

    def init_weights(self) -> None:
        """Re-initialise every part (each part also initialises itself when built; pretrained files reload)."""
        for part in (self.backbone, self.neck, self.bbox_head):
            if part is not None and hasattr(part, 'init_weights'):
                part.init_weights()

    def extract_feat(self, images: Tensor) -> tuple[Tensor, ...]:
        """``Tensor[N, 3, H, W]`` -> the feature maps the head reads, one per level."""
        if not isinstance(images, Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f'images must be a Tensor[N, 3, H, W] batch, got {shape}')
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        feats = self.backbone(images)
        return self.neck(feats) if self.neck is not None else feats

    def forward(self, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Raw head outputs.

        Args:
            images: ``Tensor[N, 3, H, W]`` normalised input images.

        Returns:
            ``cls_scores``: one ``Tensor[N, A_l * C, H_l, W_l]`` per level (``C = num_classes + 1`` for SSD's
            softmax, background last); ``bbox_preds``: one ``Tensor[N, A_l * 4, H_l, W_l]`` per level.
        """
        return self.bbox_head(self.extract_feat(images))

    def loss(self, images: Tensor, targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """Named scalar losses of a batch (sum them to train).

        Args:
            images: ``Tensor[N, 3, H, W]``.
            targets: one dict per image: ``boxes`` ``Tensor[M, 4]`` (input-image pixels), ``labels`` ``Tensor[M]``
                in ``0 .. num_classes - 1``, optional ``ignore_boxes`` ``Tensor[K, 4]``.
        """
        cls_scores, bbox_preds = self(images)
        return self.bbox_head.loss(cls_scores, bbox_preds, targets)

    @torch.no_grad()
    def predict(self, images: Tensor, metas: Sequence[Mapping] | None = None,
                rescale: bool = True) -> list[dict[str, Tensor]]:
        """Detections of a batch, post-processed with ``test_cfg``.

        Args:
            images: ``Tensor[N, 3, H, W]``.
            metas: one dict per image; ``scale_factor`` ``(sx, sy)`` and ``ori_shape`` ``(h, w)`` are needed with
                ``rescale``, ``img_shape`` ``(h, w)`` clips the boxes in the input image.
            rescale: boxes in original-image pixels (else input-image pixels).

        Returns:
            One dict per image: ``boxes`` ``Tensor[K, 4]``, ``scores`` ``Tensor[K]``, ``labels`` ``Tensor[K]``.
        """
        if self.autocast_dtype is None:
            cls_scores, bbox_preds = self(images)
        else:
            with torch.autocast(images.device.type, dtype=self.autocast_dtype):
                cls_scores, bbox_preds = self(images)
            # decoding, thresholds and NMS in float32, as without autocast
            cls_scores, bbox_preds = [c.float() for c in cls_scores], [b.float() for b in bbox_preds]
        return self.bbox_head.predict(cls_scores, bbox_preds, metas, rescale=rescale, test_cfg=self.test_cfg)
