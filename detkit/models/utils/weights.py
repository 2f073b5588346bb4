"""Loading local torchvision weight files into detkit modules (nothing is ever downloaded).

A backbone's ``pretrained=PATH`` (or ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``) names a local
torchvision weight file; ``checkpoint='torchvision://resnet50'`` (also ``resnet18/34/101/152``, ``vgg16``,
``mobilenet_v2``), mmdetection's spelling, names the ImageNet file torchvision would download, looked up in the torch
hub cache (:func:`torchvision_weight_path`); when it is not there the error says which file to put where.

detkit's VGG16 and ResNet backbones use torchvision's parameter names, so their converters mostly select keys:

* :func:`convert_torchvision_vgg16` - ``vgg16()`` state dict -> :class:`~detkit.models.backbones.SSDVGG`
  (``features.0`` .. ``features.28``; the 4096-wide classifier cannot become fc6/fc7 and is dropped);
* :func:`convert_torchvision_resnet` - ``resnet50()`` (or 18/34/101/152) state dict ->
  :class:`~detkit.models.backbones.ResNet` (drops ``fc`` and the stages the backbone does not have);
* :func:`convert_torchvision_mobilenet_v2` - ``mobilenet_v2()`` state dict ->
  :class:`~detkit.models.backbones.MobileNetV2` (mmdetection's ``conv1``, ``layer1..7``, ``conv2`` naming);
* :func:`convert_torchvision_ssd300_vgg16` - a whole ``ssd300_vgg16()`` detector -> detkit's SSD300
  (:class:`~detkit.models.detectors.SingleStageDetector` with ``SSDVGG`` + ``SSDNeck`` + ``SSDHead``). torchvision
  puts the background at class 0 and detkit at the last index, so the classification convs' output channels are
  permuted: torchvision class ``k > 0`` becomes detkit class ``k - 1`` and its background becomes ``num_classes``;
* :func:`convert_torchvision_retinanet_resnet50_fpn` - a whole ``retinanet_resnet50_fpn()`` detector -> detkit's
  RetinaNet in torchvision's layout (``configs/retinanet/retinanet_r50_fpn_coco_tv.py``).

Checkpoints of other toolboxes (official M2Det, mmdetection) are converted in :mod:`.converters`.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from detkit.utils.checkpoint_io import _first, read_torch_file

__all__ = ['convert_torchvision_vgg16', 'convert_torchvision_resnet', 'convert_torchvision_mobilenet_v2',
           'convert_torchvision_ssd300_vgg16', 'convert_torchvision_retinanet_resnet50_fpn', 'load_state_dict_file',
           'load_weight_file', 'load_pretrained', 'pretrained_path', 'torchvision_weight_path', 'TORCHVISION_PREFIX']

#: mmdetection's prefix for torchvision's ImageNet weights, e.g. ``'torchvision://resnet50'``
TORCHVISION_PREFIX = 'torchvision://'
#: the torchvision networks ``torchvision://NAME`` may name (their ``IMAGENET1K_V1`` weights, as mmdetection loads)
TORCHVISION_MODELS = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152', 'vgg16', 'mobilenet_v2')


def torchvision_weight_path(uri: str) -> str:
    """The local file of ``torchvision://NAME``: the torch hub cache's copy of torchvision's ImageNet weights.

    ``torch.hub.get_dir()/checkpoints/<file name>`` (``$TORCH_HOME/hub/checkpoints``, by default
    ``~/.cache/torch/hub/checkpoints``), where torchvision itself saves what it downloads, with the file name of
    ``torchvision.models.get_model_weights(NAME).IMAGENET1K_V1.url`` (e.g. ``resnet50-0676ba61.pth``). Nothing is
    downloaded.

    Raises:
        ValueError: for a name that is not one of :data:`TORCHVISION_MODELS`.
        FileNotFoundError: when the file is not in the cache; the message gives the URL to download and the path to
            put it at (or to pass its own path as ``pretrained=PATH``).
    """
    name = uri[len(TORCHVISION_PREFIX):] if uri.startswith(TORCHVISION_PREFIX) else uri
    if name not in TORCHVISION_MODELS:
        raise ValueError(f'{uri!r}: detkit knows the torchvision ImageNet weights of {list(TORCHVISION_MODELS)} '
                         f'(as {TORCHVISION_PREFIX}NAME); give other weight files by their local path')
    import torchvision  # only here: reading a URL needs no network, but the import costs a second

    url = torchvision.models.get_model_weights(name).IMAGENET1K_V1.url
    path = os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(url))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'{TORCHVISION_PREFIX}{name}: the weight file {path} does not exist, and detkit never downloads. '
            f'Download {url} and put it at {path} (the torch hub cache, $TORCH_HOME/hub/checkpoints), or give the '
            f'downloaded file\'s own path instead: pretrained=PATH or init_cfg=dict(type=\'Pretrained\', '
            f'checkpoint=PATH)')
    return path


def pretrained_path(pretrained: str | None, init_cfg: dict | None, owner: str,
                    torchvision_names: tuple[str, ...] = ()) -> str | None:
    """The weight file named by ``pretrained`` or by ``init_cfg=dict(type='Pretrained', checkpoint=...)``.

    Args:
        pretrained: a local path, ``'torchvision://NAME'`` or ``None``.
        init_cfg: ``None`` or ``dict(type='Pretrained', checkpoint=...)`` (a path or ``'torchvision://NAME'``).
        owner: the module asking, for messages (e.g. ``'ResNet(depth=50)'``).
        torchvision_names: the ``torchvision://`` names whose weights fit the module (e.g. ``('resnet50',)``).

    Returns:
        A local path (``torchvision://NAME`` resolved by :func:`torchvision_weight_path`) or ``None``.

    Raises:
        ValueError: a malformed ``init_cfg``, both arguments naming different files, or a ``torchvision://`` name
            whose network is not the module's.
        FileNotFoundError: a ``torchvision://`` file missing from the torch hub cache (saying what to put where).
    """
    if init_cfg is not None:
        if not isinstance(init_cfg, Mapping) or init_cfg.get('type') != 'Pretrained' or 'checkpoint' not in init_cfg:
            raise ValueError(f"{owner}: init_cfg must be dict(type='Pretrained', checkpoint=PATH), got {init_cfg!r}")
        if pretrained is not None and pretrained != init_cfg['checkpoint']:
            raise ValueError(f'{owner}: give the weight file once, as pretrained or as init_cfg, not both '
                             f'({pretrained!r} and {init_cfg["checkpoint"]!r})')
        pretrained = init_cfg['checkpoint']
    if pretrained is not None and not isinstance(pretrained, (str, os.PathLike)):
        raise ValueError(f'{owner}: pretrained must be the path of a local weight file or '
                         f'\'{TORCHVISION_PREFIX}NAME\', got {pretrained!r}')
    if pretrained is None:
        return None
    pretrained = os.fspath(pretrained)
    if pretrained.startswith(TORCHVISION_PREFIX):
        name = pretrained[len(TORCHVISION_PREFIX):]
        if name not in torchvision_names:
            fitting = ', '.join(TORCHVISION_PREFIX + n for n in torchvision_names) or 'none'
            raise ValueError(f'{owner}: {pretrained!r} does not fit this network; the torchvision weights that fit '
                             f'it: {fitting}')
        return torchvision_weight_path(pretrained)
    return pretrained


def load_weight_file(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """Read a state dict and its checkpoint's ``meta`` from ``path``.

    The file may hold a bare state dict or a checkpoint with one under ``state_dict`` or ``model`` (and a ``meta``
    dict: detkit, mmdetection); a ``module.`` prefix left by ``DataParallel`` is removed.

    Returns:
        ``(state_dict, meta)``, ``meta`` empty when the file has none.

    Raises:
        FileNotFoundError: naming ``path``.
        CheckpointError: naming ``path`` when it is truncated or corrupt or holds pickled objects (the same reader
            and messages as checkpoint loading).
        ValueError: naming ``path`` when it holds no state dict.
    """
    path = os.fspath(path)
    obj = read_torch_file(path, 'cpu', what='weight file',
                          missing_hint=' (detkit never downloads weights; download the file yourself and give its '
                                       'local path)')
    meta = obj.get('meta') if isinstance(obj, Mapping) else None
    for key in ('state_dict', 'model'):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f'{path} does not hold a state dict of tensors (got {type(obj).__name__})')
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in obj.items()}
    return state, dict(meta) if isinstance(meta, Mapping) else {}


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """The state dict of the weight file at ``path`` (see :func:`load_weight_file`)."""
    return load_weight_file(path)[0]


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


#: blocks of MobileNetV2's seven inverted-residual stages (torchvision's features.1 .. features.17, in order)
_MOBILENET_V2_BLOCKS = (1, 2, 3, 4, 3, 3, 1)


def convert_torchvision_mobilenet_v2(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision ``mobilenet_v2()`` state dict -> :class:`~detkit.models.backbones.MobileNetV2` keys.

    Layer by layer: ``features.0.{0,1}`` (stem conv, bn) -> ``conv1.{conv,bn}``; ``features.b`` (b = 1..17, the
    inverted residual blocks) -> ``layer{s}.{j}`` (block ``j`` of stage ``s``, stages of 1, 2, 3, 4, 3, 3, 1
    blocks), whose ``conv.i.{0,1}`` (conv-bn-ReLU6 pairs: the expansion, absent in stage 1, and the depthwise conv)
    -> ``conv.i.{conv,bn}`` and whose last two entries (the linear 1x1 conv and its bn) -> ``conv.k.{conv,bn}``;
    ``features.18.{0,1}`` -> ``conv2.{conv,bn}``. The classifier is dropped.

    Raises:
        ValueError: naming the first key that is not part of torchvision's MobileNetV2.
    """
    block_to_layer = {}
    b = 1
    for stage, num_blocks in enumerate(_MOBILENET_V2_BLOCKS, start=1):
        for j in range(num_blocks):
            block_to_layer[b] = f'layer{stage}.{j}'
            b += 1
    last = b  # 18: the final 1x1 conv to 1280 channels
    # the linear conv of a block is conv.2 (bn conv.3) with an expansion conv, conv.1 (bn conv.2) without
    expanding = {int(m.group(1)) for k in state_dict if (m := re.fullmatch(r'features\.(\d+)\.conv\.3\.\w+', k))}
    out = {}
    for key, value in state_dict.items():
        if key.startswith('classifier.'):
            continue
        new_key = None
        if m := re.fullmatch(r'features\.(\d+)\.([01])\.(\w+)', key):
            idx = int(m.group(1))
            part = 'conv' if m.group(2) == '0' else 'bn'
            if idx == 0:
                new_key = f'conv1.{part}.{m.group(3)}'
            elif idx == last:
                new_key = f'conv2.{part}.{m.group(3)}'
        elif m := re.fullmatch(r'features\.(\d+)\.conv\.(\d+)\.(?:(\d)\.)?(\w+)', key):
            block, i, sub, name = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
            linear = 2 if block in expanding else 1
            if block in block_to_layer:
                if sub is not None and i < linear:  # a conv-bn-ReLU6 triple
                    new_key = f'{block_to_layer[block]}.conv.{i}.{"conv" if sub == "0" else "bn"}.{name}'
                elif sub is None and i in (linear, linear + 1):  # the linear conv, then its bn
                    new_key = f'{block_to_layer[block]}.conv.{linear}.{"conv" if i == linear else "bn"}.{name}'
        if new_key is None:
            raise ValueError(f'unexpected key {key!r} in a torchvision mobilenet_v2 state dict')
        out[new_key] = value
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
    'mobilenet_v2': convert_torchvision_mobilenet_v2,
}


#: which of a module's weights a converter's file holds (all, when not listed): torchvision's VGG16 has conv1_1 ..
#: conv5_3 (features.0 .. 28) but not SSD's fc6/fc7 convs nor its L2Norm
_FILE_HOLDS: dict[str, Callable[[str], bool]] = {
    'vgg16': lambda key: (m := re.match(r'features\.(\d+)\.', key)) is not None and int(m.group(1)) <= 28,
}


def load_pretrained(module: nn.Module, path: str | os.PathLike, converter: str, **converter_args) -> None:
    """Load the torchvision weight file at ``path`` into ``module`` through a named converter.

    Every converted key must exist in ``module`` with the same shape (keys the converter drops, such as
    torchvision's ``fc.*`` or the stages a ResNet does not have, do not count), and every weight of ``module`` that
    such a file holds must be in it: a ResNet-18 file for a ResNet-34, or a file of a few tensors, is an error.
    Parameters of ``module`` that the file cannot hold (SSD's fc6/fc7 and L2Norm for a VGG16 file) keep their
    initialisation; so do ``num_batches_tracked`` counters, which old torchvision files lack.

    Raises:
        FileNotFoundError: naming the path.
        ValueError: naming the path and the module, with the count and the first few of the missing weights, the
            unexpected keys and the shape mismatches.
    """
    path = os.fspath(path)
    state = _CONVERTERS[converter](load_state_dict_file(path), **converter_args)
    own = module.state_dict()
    holds = _FILE_HOLDS.get(converter, lambda key: True)
    required = [k for k in own if holds(k) and not k.endswith('.num_batches_tracked')]
    missing = [k for k in required if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f'{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in state.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or mismatched:
        owner = type(module).__name__ + (f'(depth={module.depth})' if hasattr(module, 'depth') else '')
        parts = [f'{len(missing)} of {len(required)} weights are not in the file ({_first(missing)})' if missing
                 else '',
                 f'{len(unexpected)} unexpected keys ({_first(unexpected)})' if unexpected else '',
                 f'{len(mismatched)} shape mismatches ({_first(mismatched)})' if mismatched else '']
        raise ValueError(f'{path} does not fit {owner}: {"; ".join(p for p in parts if p)}')
    module.load_state_dict(state, strict=False)

