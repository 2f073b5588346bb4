"""Checkpoints of other toolboxes -> detkit detector keys: the official M2Det and mmdetection 3.x.

* :func:`convert_m2det_official` - VDIGPKU/M2Det (formerly qijiezhao/M2Det) VGG16 checkpoints (M2Det320 and
  M2Det512, COCO: ``configs/m2det/m2det320_vgg_coco.py``, ``m2det512_vgg_coco.py``);
* :func:`convert_mmdet` - mmdetection 3.x checkpoints of SSD300/512 (VGG16), SSDLite (MobileNetV2) and RetinaNet
  R50-FPN (``configs/ssd/ssd300_coco.py``, ``ssd512_coco.py``, ``ssdlite_mobilenetv2_coco.py``,
  ``configs/retinanet/retinanet_r50_fpn_1x_coco.py``).

Both take a state dict (as :func:`~detkit.models.utils.weights.load_weight_file` reads it) and return one with
detkit's keys, refusing keys they do not know; :func:`check_fits` then says, key by key, whether it fits a model.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Mapping

import torch
from torch import Tensor, nn

from .weights import _background_last

__all__ = ['convert_m2det_official', 'convert_mmdet', 'check_fits']

# ------------------------------------------------------------------------------------------------ official M2Det
# One conv-bn-ReLU of the official code (layers/nn_utils.py BasicConv): ``conv`` (no bias) and ``bn``; its ReLU has
# no parameters. detkit's ConvNormAct names the same children ``conv`` and ``bn`` (and ``act``).
_BASIC_CONV = r'(conv\.weight|bn\.(?:weight|bias|running_mean|running_var|num_batches_tracked))'
_M2DET_RULES: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p), r) for p, r in (
    # the VGG16 list (conv1_1 .. conv5_3 at 0-28 as torchvision's features, pool5 30, fc6 31, fc7 33)
    (r'base\.(\d+)\.(weight|bias)', r'backbone.features.\1.\2'),
    # FFMv1: 3x3 conv of conv4_3, 1x1 conv of fc7
    (r'reduce\.' + _BASIC_CONV, r'neck.reduce.\1'),
    (r'up_reduce\.' + _BASIC_CONV, r'neck.up_reduce.\1'),
    # FFMv2: one BasicConv repeated (``[BasicConv(...)] * num_levels``), saved under every index
    (r'leach\.(\d+)\.' + _BASIC_CONV, r'neck.leach.\1.\2'),
    # the TUMs unet1 .. unet8 become neck.tums.0 .. 7 (see _m2det_key: the index shifts by one)
    (r'unet(\d+)\.(layers|toplayer|latlayer|smooth)\.(\d+)\.' + _BASIC_CONV, r'neck.tums.{tum}.\2.\3.\4'),
    # SFAM's squeeze and excitation 1x1 convs, also one module repeated per scale (only with sfam=True)
    (r'sfam_module\.(fc[12])\.(\d+)\.(weight|bias)', r'neck.sfam.\1.\2.\3'),
    # the batch norm of the largest scale
    (r'Norm\.(weight|bias|running_mean|running_var|num_batches_tracked)', r'neck.norm.\1'),
    # the predictors
    (r'loc\.(\d+)\.(weight|bias)', r'bbox_head.reg_convs.\1.\2'),
    (r'conf\.(\d+)\.(weight|bias)', r'bbox_head.cls_convs.\1.\2'),
))
# the modules the official code repeats under several indices: detkit's shared modules (key without the index)
_M2DET_SHARED = re.compile(r'(neck\.leach|neck\.sfam\.fc[12])\.(\d+)\.(.+)')


def _m2det_key(key: str) -> str | None:
    """The detkit key of one official M2Det key, or ``None`` for a key the official VGG16 model does not have."""
    for pattern, template in _M2DET_RULES:
        m = pattern.fullmatch(key)
        if m:
            if '{tum}' in template:
                template = template.replace('{tum}', str(int(m.group(1)) - 1))
            return m.expand(template)
    return None


def convert_m2det_official(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official M2Det VGG16 checkpoint (VDIGPKU/M2Det ``m2det.py``) -> detkit M2Det detector keys.

    Key by key (the official module names from ``m2det.py`` and ``layers/nn_utils.py``): ``base.i`` (the VGG16
    list with pool5, fc6, fc7) -> ``backbone.features.i``; ``reduce`` / ``up_reduce`` (FFMv1) -> ``neck.reduce`` /
    ``neck.up_reduce``; ``leach.i`` (FFMv2) -> ``neck.leach.i``; ``unet{k}`` (the TUMs: ``layers``, ``toplayer``,
    ``latlayer``, ``smooth``, each ``i.conv`` / ``i.bn``) -> ``neck.tums.{k-1}``; ``sfam_module.fc1/fc2.i`` ->
    ``neck.sfam.fc1/fc2.i``; ``Norm`` -> ``neck.norm``; ``loc.i`` -> ``bbox_head.reg_convs.i``; ``conf.i`` ->
    ``bbox_head.cls_convs.i`` with every anchor's class channels rotated so that the background moves from the
    first (official ``bkg_label=0``) to the last index: official class ``k > 0`` becomes detkit label ``k - 1``.
    A ``module.`` prefix (``DataParallel``) is removed; batch norms saved before PyTorch 0.4.1 get a zero
    ``num_batches_tracked``.

    The official FFMv2 and SFAM lists repeat ONE module (``[conv] * num_levels``), so a checkpoint holds the same
    tensors under ``leach.0`` .. ``leach.7``; detkit's MLFPN shares its module the same way. The repeated keys are
    checked to be equal: a checkpoint whose copies differ was not made by that model and cannot be loaded
    faithfully into it.

    Raises:
        ValueError: naming a key the official VGG16 model does not have (e.g. the ResNet variants' ``base.conv1``),
            or the first pair of repeated keys whose tensors differ.
    """
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state_dict.items()}
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        new_key = _m2det_key(key)
        if new_key is None:
            raise ValueError(f'unexpected key {key!r} in an official M2Det checkpoint: detkit converts the VGG16 '
                             'models of VDIGPKU/M2Det (keys base.N, reduce, up_reduce, leach.N, unetK, sfam_module, '
                             'Norm, loc.N, conf.N)')
        if new_key.startswith('bbox_head.cls_convs.'):
            reg = state.get(key.replace('conf.', 'loc.', 1))
            if reg is None:
                raise ValueError(f'{key!r} has no matching {key.replace("conf.", "loc.", 1)!r}: the number of anchors '
                                 'per location (its output channels / 4) is needed to move the background class')
            value = _background_last(value, reg.shape[0] // 4)
        out[new_key] = value
        origin[new_key] = key
    _check_shared_copies(out, origin)
    _fill_num_batches_tracked(out)
    return out


def _check_shared_copies(state: Mapping[str, Tensor], origin: Mapping[str, str]) -> None:
    """Every copy of a shared module's tensor (``neck.leach.i.*``, ``neck.sfam.fc1.i.*``) must equal the first."""
    copies = sorted((int(m.group(2)), m.group(1), m.group(3), key)
                    for key in state if (m := _M2DET_SHARED.fullmatch(key)))
    first: dict[tuple[str, str], str] = {}
    for _, module, param, key in copies:  # index 0 first: the other copies are compared with it
        group = (module, param)
        if group not in first:
            first[group] = key
        elif not torch.equal(state[key], state[first[group]]):
            raise ValueError(
                f'{origin[key]!r} differs from {origin[first[group]]!r}: the official M2Det repeats ONE module '
                f'under every index of {module.split(".")[-1]} (a Python list multiplied), and so does detkit, '
                'so these copies must be equal; this checkpoint was not made by that model and cannot be loaded '
                'faithfully')


def _fill_num_batches_tracked(state: dict[str, Tensor]) -> None:
    """Batch norms saved without ``num_batches_tracked`` (PyTorch < 0.4.1, frozen norms) get a zero counter."""
    for key in [k for k in state if k.endswith('.running_mean')]:
        state.setdefault(key[:-len('running_mean')] + 'num_batches_tracked', torch.tensor(0))


# --------------------------------------------------------------------------------------------------- mmdetection
# mmdetection 3.x names (mmdet/models/backbones/{ssd_vgg,mobilenet_v2,resnet}.py, necks/{ssd_neck,fpn}.py,
# dense_heads/{ssd_head,retina_head}.py, layers/inverted_residual.py; mmcv's ConvModule: conv, bn, no activation
# parameters) -> detkit, where they differ. Everything not listed keeps its name: ResNet (torchvision's names in
# both), FPN (lateral_convs.i.conv, fpn_convs.i.conv), RetinaHead (cls_convs.i.conv, reg_convs.i.conv, retina_cls,
# retina_reg), SSDNeck's 1x1 and plain 3x3 convs (extra_layers.i.j.conv), MobileNetV2's conv1 and conv2 (ConvModule)
# and SSDLite's head (cls_convs.i.0.conv / .0.bn: the depthwise ConvModule, .1: the 1x1 predictor).
_MMDET_KNOWN_PREFIXES = ('backbone.', 'neck.', 'bbox_head.')


def _mmdet_inverted_residual_index(part: str, has_expand: bool) -> int:
    """Position in detkit's ``InvertedResidual.conv`` of mmdetection's ``expand_conv``, ``depthwise_conv`` or
    ``linear_conv`` (the expansion conv exists only when the expand ratio is not 1, i.e. not in ``layer1``)."""
    order = ('expand_conv', 'depthwise_conv', 'linear_conv') if has_expand else ('depthwise_conv', 'linear_conv')
    return order.index(part)


def convert_mmdet(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An mmdetection 3.x SSD300/SSD512, SSDLite-MobileNetV2 or RetinaNet-R50-FPN checkpoint -> detkit keys.

    What is renamed (mmdetection -> detkit); every other key keeps its name:

    * SSD's L2Norm lives in mmdetection's neck and in detkit's backbone: ``neck.l2_norm.weight`` ->
      ``backbone.l2_norm.weight`` (the VGG layers ``backbone.features.i`` are the same in both: conv1_1 .. conv5_3
      at 0-28, pool5 30, fc6 31, fc7 33);
    * SSD's predictors are one-conv ``nn.Sequential`` in mmdetection and bare convs in detkit:
      ``bbox_head.{cls,reg}_convs.i.0.{weight,bias}`` -> ``bbox_head.{cls,reg}_convs.i.{weight,bias}``;
    * SSDLite's depthwise-separable extra convs: ``neck.extra_layers.i.1.depthwise_conv`` / ``pointwise_conv`` ->
      ``neck.extra_layers.i.1.0`` / ``.1``;
    * MobileNetV2's blocks: ``backbone.layerK.j.expand_conv`` / ``depthwise_conv`` / ``linear_conv`` ->
      ``backbone.layerK.j.conv.0`` / ``.1`` / ``.2`` (``.0`` / ``.1`` in ``layer1``, which has no expansion).

    mmdetection puts the softmax background last, as detkit does, and RetinaNet has none: the classes stay as they
    are. A ``module.`` prefix is removed.

    Raises:
        ValueError: naming a key outside ``backbone.``, ``neck.`` and ``bbox_head.`` (e.g. a two-stage model's
            ``rpn_head.``) or an unknown part of a MobileNetV2 block.
    """
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state_dict.items()}
    expanding = {m.group(1) for k in state if (m := re.match(r'(backbone\.layer\d+\.\d+)\.expand_conv\.', k))}
    out = {}
    for key, value in state.items():
        if not key.startswith(_MMDET_KNOWN_PREFIXES):
            raise ValueError(f'unexpected key {key!r} in an mmdetection checkpoint: detkit converts one-stage '
                             'detectors (backbone., neck., bbox_head. keys)')
        new_key = key
        if key == 'neck.l2_norm.weight':
            new_key = 'backbone.l2_norm.weight'
        elif m := re.fullmatch(r'bbox_head\.(cls|reg)_convs\.(\d+)\.0\.(weight|bias)', key):
            new_key = f'bbox_head.{m.group(1)}_convs.{m.group(2)}.{m.group(3)}'
        elif m := re.fullmatch(r'(neck\.extra_layers\.\d+\.1)\.(depthwise|pointwise)_conv\.(.+)', key):
            new_key = f'{m.group(1)}.{0 if m.group(2) == "depthwise" else 1}.{m.group(3)}'
        elif m := re.fullmatch(r'(backbone\.layer\d+\.\d+)\.(\w+_conv)\.(.+)', key):
            block, part, rest = m.groups()
            if part not in ('expand_conv', 'depthwise_conv', 'linear_conv'):
                raise ValueError(f'unexpected key {key!r} in an mmdetection MobileNetV2 block')
            new_key = f'{block}.conv.{_mmdet_inverted_residual_index(part, block in expanding)}.{rest}'
        out[new_key] = value
    return out


def check_fits(state: Mapping[str, Tensor], model: nn.Module, source: str = 'the converted checkpoint',
               uncovered: Collection[str] = ()) -> None:
    """Raise a ``ValueError`` unless ``state`` has exactly ``model``'s keys, each with the model's shape.

    Args:
        state: converted weights.
        model: the detkit model they are for.
        source: what ``state`` came from, for the message (a file name).
        uncovered: model keys that ``state`` may lack (layers no source of its kind holds, e.g. SSD's fc6 and fc7
            for a torchvision VGG16, which keep their initialisation).

    Raises:
        ValueError: listing the model's keys missing from ``state``, the keys of ``state`` the model does not
            have, and the shape mismatches (the first 10 of each).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and k not in uncovered]
    unexpected = [k for k in state if k not in own]
    mismatched = [f'{k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                  for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(f'{source} does not fit {type(model).__name__}: {len(missing)} model keys missing '
                         f'{missing[:10]}, {len(unexpected)} keys the model does not have {unexpected[:10]}, '
                         f'{len(mismatched)} shape mismatches {mismatched[:10]}')
