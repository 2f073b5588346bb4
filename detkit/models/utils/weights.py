"""Loading local torchvision weight files into detkit modules (nothing is ever downloaded).

detkit's VGG16 and ResNet backbones use torchvision's parameter names, so their converters mostly select keys:

* :func:`convert_torchvision_vgg16` - ``vgg16()`` state dict -> :class:`~detkit.models.backbones.SSDVGG`
  (``features.0`` .. ``features.28``; the 4096-wide classifier cannot become fc6/fc7 and is dropped);
* :func:`convert_torchvision_resnet` - ``resnet50()`` (or 18/34/101/152) state dict ->
  :class:`~detkit.models.backbones.ResNet` (drops ``fc`` and the stages the backbone does not have);
* :func:`convert_torchvision_ssd300_vgg16` - a whole ``ssd300_vgg16()`` detector -> detkit's SSD300
  (:class:`~detkit.models.detectors.SingleStageDetector` with ``SSDVGG`` + ``SSDNeck`` + ``SSDHead``). torchvision
  puts the background at class 0 and detkit at the last index, so the classification convs' output channels are
  permuted: torchvision class ``k > 0`` becomes detkit class ``k - 1`` and its background becomes ``num_classes``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from detkit.utils.checkpoint_io import read_torch_file

__all__ = ['convert_torchvision_vgg16', 'convert_torchvision_resnet', 'convert_torchvision_ssd300_vgg16',
           'convert_torchvision_retinanet_resnet50_fpn', 'load_state_dict_file', 'load_pretrained', 'pretrained_path']


def pretrained_path(pretrained: str | None, init_cfg: dict | None, owner: str) -> str | None:
    """The weight file named by ``pretrained`` or by ``init_cfg=dict(type='Pretrained', checkpoint=...)``."""
    if init_cfg is not None:
        if not isinstance(init_cfg, Mapping) or init_cfg.get('type') != 'Pretrained' or 'checkpoint' not in init_cfg:
            raise ValueError(f"{owner}: init_cfg must be dict(type='Pretrained', checkpoint=PATH), got {init_cfg!r}")
        if pretrained is not None and pretrained != init_cfg['checkpoint']:
            raise ValueError(f'{owner}: give the weight file once, as pretrained or as init_cfg, not both '
                             f'({pretrained!r} and {init_cfg["checkpoint"]!r})')
        pretrained = init_cfg['checkpoint']
    if pretrained is not None and not isinstance(pretrained, (str, os.PathLike)):
        raise ValueError(f'{owner}: pretrained must be the path of a local weight file, got {pretrained!r}')
    return None if pretrained is None else os.fspath(pretrained)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from ``path``: a bare state dict or a checkpoint holding one under ``state_dict`` or
    ``model``; a ``module.`` prefix left by ``DataParallel`` is removed.

    Raises:
        FileNotFoundError: naming ``path``.
        CheckpointError: naming ``path`` when it is truncated or corrupt or holds pickled objects (the same reader
            and messages as checkpoint loading).
    """
    path = os.fspath(path)
    obj = read_torch_file(path, 'cpu', what='weight file',
                          missing_hint=' (detkit never downloads weights; download the torchvision file yourself '
                                       'and give its local path)')
    for key in ('state_dict', 'model'):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ValueError(f'{path} does not hold a state dict (got {type(obj).__name__})')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in obj.items()}


def convert_torchvision_vgg16(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision ``vgg16().state_dict()`` -> :class:`SSDVGG` keys (conv1_1 .. conv5_3, ``features.0-28``)."""
    out = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r'features\.(\d+)\.(weight|bias)', key)
        if m and int(m.group(1)) <= 28:
            out[key] = value
    if not out:
        raise ValueError('no VGG16 "features.N" weights found; is this a torchvision vgg16 state dict?')
    return out


def convert_torchvision_resnet(state_dict: Mapping[str, Tensor], num_stages: int = 4) -> dict[str, Tensor]:
    """torchvision ``resnet*()`` state dict -> :class:`ResNet` keys, keeping stem and ``layer1..num_stages``."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith('fc.'):
            continue
        m = re.match(r'layer(\d)\.', key)
        if m and int(m.group(1)) > num_stages:
            continue
        out[key] = value
    if 'conv1.weight' not in out:
        raise ValueError('no "conv1.weight" found; is this a torchvision resnet state dict?')
    return out


def convert_torchvision_ssd300_vgg16(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision ``ssd300_vgg16()`` state dict -> detkit SSD300-VGG16 detector keys.

    Layer by layer: ``backbone.features.i`` (up to conv4_3) -> ``backbone.features.i``; ``backbone.scale_weight``
    -> ``backbone.l2_norm.weight``; ``backbone.extra.0.k`` (pool4 .. conv5_3) -> ``backbone.features.(23 + k)``;
    ``backbone.extra.0.7.m`` (pool5, fc6, fc7) -> ``backbone.features.(30 + m)``; ``backbone.extra.j.{0,2}``
    (j = 1..4) -> ``neck.extra_layers.(j - 1).{0,1}.conv``; ``head.regression_head.module_list.l`` ->
    ``bbox_head.reg_convs.l``; ``head.classification_head.module_list.l`` -> ``bbox_head.cls_convs.l`` with the
    class channels of every anchor rotated so that background moves from first to last.
    """
    out = {}
    for key, value in state_dict.items():
        new_key = None
        if m := re.fullmatch(r'backbone\.features\.(\d+)\.(weight|bias)', key):
            new_key = f'backbone.features.{m.group(1)}.{m.group(2)}'
        elif key == 'backbone.scale_weight':
            new_key = 'backbone.l2_norm.weight'
        elif m := re.fullmatch(r'backbone\.extra\.0\.7\.(\d+)\.(weight|bias)', key):
            new_key = f'backbone.features.{30 + int(m.group(1))}.{m.group(2)}'
        elif m := re.fullmatch(r'backbone\.extra\.0\.(\d+)\.(weight|bias)', key):
            new_key = f'backbone.features.{23 + int(m.group(1))}.{m.group(2)}'
        elif m := re.fullmatch(r'backbone\.extra\.(\d+)\.([02])\.(weight|bias)', key):
            new_key = f'neck.extra_layers.{int(m.group(1)) - 1}.{int(m.group(2)) // 2}.conv.{m.group(3)}'
        elif m := re.fullmatch(r'head\.regression_head\.module_list\.(\d+)\.(weight|bias)', key):
            new_key = f'bbox_head.reg_convs.{m.group(1)}.{m.group(2)}'
        elif m := re.fullmatch(r'head\.classification_head\.module_list\.(\d+)\.(weight|bias)', key):
            new_key = f'bbox_head.cls_convs.{m.group(1)}.{m.group(2)}'
            reg = state_dict[f'head.regression_head.module_list.{m.group(1)}.{m.group(2)}']
            num_anchors = reg.shape[0] // 4
            value = _background_last(value, num_anchors)
        if new_key is None:
            raise ValueError(f'unexpected key {key!r} in a torchvision ssd300_vgg16 state dict')
        out[new_key] = value
    return out


def convert_torchvision_retinanet_resnet50_fpn(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision ``retinanet_resnet50_fpn()`` state dict -> detkit RetinaNet keys in torchvision's layout
    (ResNet-50 stages 2-4 into an FPN with P6/P7 from P5, a 4-conv head over all 91 classes).

    Layer by layer: ``backbone.body.*`` -> ``backbone.*``; ``backbone.fpn.inner_blocks.i.0`` ->
    ``neck.lateral_convs.i.conv``; ``backbone.fpn.layer_blocks.i.0`` -> ``neck.fpn_convs.i.conv``;
    ``backbone.fpn.extra_blocks.p6`` / ``p7`` -> ``neck.fpn_convs.3`` / ``4``; ``head.classification_head.conv.i.0``
    -> ``bbox_head.cls_convs.i.conv``, ``cls_logits`` -> ``retina_cls``; ``head.regression_head.conv.i.0`` ->
    ``bbox_head.reg_convs.i.conv``, ``bbox_reg`` -> ``retina_reg``. Its classes stay as they are (sigmoid scores,
    no background channel to move; torchvision's class 0 is an unused "background" class).
    """
    out = {}
    for key, value in state_dict.items():
        new_key = None
        if key.startswith('backbone.body.'):
            new_key = 'backbone.' + key[len('backbone.body.'):]
        elif m := re.fullmatch(r'backbone\.fpn\.inner_blocks\.(\d+)\.0\.(weight|bias)', key):
            new_key = f'neck.lateral_convs.{m.group(1)}.conv.{m.group(2)}'
        elif m := re.fullmatch(r'backbone\.fpn\.layer_blocks\.(\d+)\.0\.(weight|bias)', key):
            new_key = f'neck.fpn_convs.{m.group(1)}.conv.{m.group(2)}'
        elif m := re.fullmatch(r'backbone\.fpn\.extra_blocks\.p([67])\.(weight|bias)', key):
            new_key = f'neck.fpn_convs.{int(m.group(1)) - 3}.conv.{m.group(2)}'
        elif m := re.fullmatch(r'head\.(classification|regression)_head\.conv\.(\d+)\.0\.(weight|bias)', key):
            tower = 'cls_convs' if m.group(1) == 'classification' else 'reg_convs'
            new_key = f'bbox_head.{tower}.{m.group(2)}.conv.{m.group(3)}'
        elif m := re.fullmatch(r'head\.classification_head\.cls_logits\.(weight|bias)', key):
            new_key = f'bbox_head.retina_cls.{m.group(1)}'
        elif m := re.fullmatch(r'head\.regression_head\.bbox_reg\.(weight|bias)', key):
            new_key = f'bbox_head.retina_reg.{m.group(1)}'
        if new_key is None:
            raise ValueError(f'unexpected key {key!r} in a torchvision retinanet_resnet50_fpn state dict')
        out[new_key] = value
    # frozen batch norms (in pretrained torchvision models) have no num_batches_tracked
    for key in [k for k in out if k.endswith('.running_mean')]:
        out.setdefault(key.replace('.running_mean', '.num_batches_tracked'), torch.tensor(0))
    return out


def _background_last(value: Tensor, num_anchors: int) -> Tensor:
    """Rotate the per-anchor class channels ``(A * K, ...)`` of a conv so that class 0 becomes class K-1."""
    rest = value.shape[1:]
    per_anchor = value.reshape(num_anchors, -1, *rest)  # (A, K, ...)
    return torch.cat([per_anchor[:, 1:], per_anchor[:, :1]], dim=1).reshape(value.shape)


_CONVERTERS: dict[str, Callable[..., dict[str, Tensor]]] = {
    'vgg16': convert_torchvision_vgg16,
    'resnet': convert_torchvision_resnet,
}


def load_pretrained(module: nn.Module, path: str | os.PathLike, converter: str, **converter_args) -> None:
    """Load the torchvision weight file at ``path`` into ``module`` through a named converter.

    Every converted key must exist in ``module`` with the same shape; parameters of ``module`` the file does not
    cover (e.g. SSD's fc6/fc7, L2Norm) keep their initialisation.

    Raises:
        FileNotFoundError: naming the path.
        ValueError: listing keys that do not fit.
    """
    state = _CONVERTERS[converter](load_state_dict_file(path), **converter_args)
    own = module.state_dict()
    unexpected = [k for k in state if k not in own]
    mismatched = [f'{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in state.items() if k in own and v.shape != own[k].shape]
    if unexpected or mismatched:
        raise ValueError(f'{path} does not fit {type(module).__name__}: unexpected keys {unexpected[:10]}, shape '
                         f'mismatches {mismatched[:10]}')
    module.load_state_dict(state, strict=False)
