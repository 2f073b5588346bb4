"""Convert a local torchvision weight file into a detkit checkpoint.

    python tools/model_converters/torchvision_to_detkit.py ssd300_vgg16 ssd300_vgg16_coco-b556d3b4.pth out.pth
    python tools/model_converters/torchvision_to_detkit.py retinanet_resnet50_fpn \\
        retinanet_resnet50_fpn_coco-eeacb38b.pth out.pth

Kinds:
    ssd300_vgg16            a whole ``torchvision.models.detection.ssd300_vgg16`` detector -> SSD300-VGG16 detector
                            keys. With torchvision's COCO weights (91 classes, background first) use
                            ``configs/ssd/ssd300_coco_tv.py``: it reproduces torchvision's pre-processing, anchors and
                            post-processing, so that the detections are torchvision's (``configs/ssd/ssd300_coco.py``
                            normalises and resizes differently and moves boxes by pixels). The background moves from
                            the first to the last class: detkit label k is torchvision label k + 1.
    retinanet_resnet50_fpn  a whole ``torchvision.models.detection.retinanet_resnet50_fpn`` detector -> RetinaNet keys
                            for ``configs/retinanet/retinanet_r50_fpn_coco_tv.py`` (torchvision's layout, 91 classes,
                            labels unchanged).
    vgg16                   ``torchvision.models.vgg16`` -> SSDVGG backbone keys (conv1_1 .. conv5_3).
    resnet                  ``torchvision.models.resnet*`` -> ResNet backbone keys (``fc`` dropped).
    mobilenet_v2            ``torchvision.models.mobilenet_v2`` -> MobileNetV2 backbone keys (classifier dropped).

For the detectors with torchvision's 91 COCO classes, torchvision's category names are stored in the checkpoint
(``meta.dataset_meta.classes``, what ``init_detector`` reads), in detkit's label order. The source must hold the
state dict of the named torchvision architecture (any ``resnet18`` .. ``resnet152`` for ``resnet``; a classifier's
``fc`` / ``classifier`` may be absent): a file missing some of its keys, or holding others, is refused. With
``--config`` every converted key is checked against the model the config builds, or for the backbone kinds against
the config's backbone (nothing missing, nothing left over, same shapes; a backbone's layers that no torchvision file
of the kind holds, such as SSD's fc6, fc7 and L2Norm, keep their initialisation). The destination must not be the
source; it is written atomically (a temporary file renamed over it), its folder created if needed.
Backbones read torchvision files directly (``backbone=dict(..., pretrained=PATH)`` or ``'torchvision://NAME'``);
converting them is only needed to inspect or ship the converted keys. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import sys

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from detkit.engine.checkpoint import save_checkpoint  # noqa: E402
from detkit.models.utils.weights import (convert_torchvision_mobilenet_v2, convert_torchvision_resnet,  # noqa: E402
                                         convert_torchvision_retinanet_resnet50_fpn,
                                         convert_torchvision_ssd300_vgg16, convert_torchvision_vgg16,
                                         load_state_dict_file)
from detkit.utils.checkpoint_io import CheckpointError  # noqa: E402
from detkit.utils.errors import run_tool  # noqa: E402
from detkit.utils.file_io import OutputPathError, check_output_file  # noqa: E402

CONVERTERS = {
    'ssd300_vgg16': convert_torchvision_ssd300_vgg16,
    'retinanet_resnet50_fpn': convert_torchvision_retinanet_resnet50_fpn,
    'vgg16': convert_torchvision_vgg16,
    'resnet': convert_torchvision_resnet,
    'mobilenet_v2': convert_torchvision_mobilenet_v2,
}

#: torchvision's ResNets: blocks per stage, and whether the blocks are bottlenecks (``conv3``)
RESNET_BLOCKS = {'resnet18': ((2, 2, 2, 2), False), 'resnet34': ((3, 4, 6, 3), False),
                 'resnet50': ((3, 4, 6, 3), True), 'resnet101': ((3, 4, 23, 3), True),
                 'resnet152': ((3, 8, 36, 3), True)}
#: the torchvision architectures each kind converts (the source must be the state dict of one of them)
ARCHITECTURES = {
    'ssd300_vgg16': ('ssd300_vgg16',),
    'retinanet_resnet50_fpn': ('retinanet_resnet50_fpn',),
    'vgg16': ('vgg16',),
    'resnet': tuple(RESNET_BLOCKS),
    'mobilenet_v2': ('mobilenet_v2',),
}
#: the backbone kinds: converted into a detector's backbone, checked against the config's ``model.backbone``
BACKBONE_KINDS = ('vgg16', 'resnet', 'mobilenet_v2')
#: key prefixes the converter drops, which a source may therefore lack (a classifier's head)
DROPPED = {'vgg16': ('classifier.',), 'resnet': ('fc.',), 'mobilenet_v2': ('classifier.',)}


def from_torchvision(kind: str, key: str) -> bool:
    """Whether a torchvision file of ``kind`` can hold the converted (detkit) ``key``: SSDVGG's fc6, fc7 (features
    31, 33) and L2Norm are in no torchvision VGG16, and keep their initialisation."""
    if kind == 'vgg16':
        m = re.fullmatch(r'features\.(\d+)\.(weight|bias)', key)
        return bool(m) and int(m.group(1)) <= 28
    return True


@functools.lru_cache(maxsize=None)
def architecture_keys(name: str) -> frozenset[str]:
    """The state dict keys of torchvision's architecture ``name`` (built on the meta device: nothing downloaded, no
    memory), less the batch norm counters that frozen batch norms lack."""
    import torchvision

    kwargs = {'weights': None} if name in RESNET_BLOCKS or name in ('vgg16', 'mobilenet_v2') else \
        {'weights': None, 'weights_backbone': None}
    with torch.device('meta'):
        keys = torchvision.models.get_model(name, **kwargs).state_dict()
    return frozenset(k for k in keys if not k.endswith('num_batches_tracked'))


def closest_architecture(kind: str, keys: set[str]) -> str:
    """The torchvision architecture of ``kind`` that ``keys`` look like (for ``resnet``: by blocks per stage)."""
    if kind != 'resnet':
        return ARCHITECTURES[kind][0]
    bottleneck = any(re.match(r'layer\d\.\d+\.conv3\.', k) for k in keys)
    blocks = [1 + max((int(m.group(2)) for k in keys if (m := re.match(r'layer(\d)\.(\d+)\.', k))
                       and m.group(1) == str(stage)), default=-1) for stage in range(1, 5)]
    return min(RESNET_BLOCKS, key=lambda name: (RESNET_BLOCKS[name][1] != bottleneck,
                                                sum(abs(a - b) for a, b in zip(RESNET_BLOCKS[name][0], blocks))))


def check_architecture(kind: str, state: dict[str, torch.Tensor], source: str) -> str:
    """The torchvision architecture of ``kind`` whose state dict ``state`` is (batch norm counters, which frozen
    batch norms lack, and the classifier the converter drops aside).

    Raises:
        ValueError: naming ``source``, the closest architecture, its keys ``state`` lacks and the keys it has not.
    """
    have = {k for k in state if not k.endswith('num_batches_tracked')}
    name = closest_architecture(kind, have)
    arch = architecture_keys(name)
    missing = sorted(k for k in arch - have if not k.startswith(DROPPED.get(kind, ())))
    unexpected = sorted(have - arch)
    if missing or unexpected:
        raise ValueError(f'{source} is not a torchvision {kind} state dict: the closest, {name}, has '
                         f'{len(missing)} keys the file lacks {missing[:10]} and the file has {len(unexpected)} keys '
                         f'{name} does not have {unexpected[:10]}')
    return name


def coco_class_names(kind: str, state: dict[str, torch.Tensor]) -> tuple[str, ...] | None:
    """torchvision's COCO category names in detkit's label order, when the detector has torchvision's 91 classes.

    ``ssd300_vgg16``: the background moved last, so detkit label k is torchvision's category k + 1; RetinaNet keeps
    torchvision's labels (``'__background__'`` at 0). ``None`` for other class counts (e.g. a VOC model) and for
    backbones.
    """
    from torchvision.models.detection import RetinaNet_ResNet50_FPN_Weights, SSD300_VGG16_Weights

    if kind == 'ssd300_vgg16':
        anchors = state['bbox_head.reg_convs.0.weight'].shape[0] // 4
        outputs = state['bbox_head.cls_convs.0.weight'].shape[0] // anchors
        names = SSD300_VGG16_Weights.COCO_V1.meta['categories']
        return tuple(names[1:]) if outputs == len(names) else None
    if kind == 'retinanet_resnet50_fpn':
        anchors = state['bbox_head.retina_reg.weight'].shape[0] // 4
        outputs = state['bbox_head.retina_cls.weight'].shape[0] // anchors
        names = RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta['categories']
        return tuple(names) if outputs == len(names) else None
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('kind', choices=sorted(CONVERTERS), help='what the torchvision file holds')
    parser.add_argument('src', help='torchvision weight file')
    parser.add_argument('dst', help='detkit checkpoint to write ({"state_dict": ..., "meta": ...})')
    parser.add_argument('--config', help='a detkit config whose model (for a backbone kind: whose model.backbone) the '
                                         'weights must fit exactly (checked)')
    args = parser.parse_args(argv)
    try:  # before the conversion: a writable destination that is not the source
        check_output_file(args.dst, [args.src, args.config], 'dst')
        src_state = load_state_dict_file(args.src)
        check_architecture(args.kind, src_state, args.src)
        if not args.config:
            state = CONVERTERS[args.kind](src_state)
        else:
            from detkit.models.utils.converters import check_fits
            from detkit.registry import MODELS
            from detkit.utils import load_config

            model_cfg = load_config(args.config).model
            if args.kind in BACKBONE_KINDS:
                # the backbone alone, without loading the weight file it may name (the one being converted, maybe)
                backbone = {k: v for k, v in model_cfg.backbone.items() if k not in ('pretrained', 'init_cfg')}
                model = MODELS.build(backbone)
                options = {'num_stages': getattr(model, 'num_stages', 4)} if args.kind == 'resnet' else {}
                state = CONVERTERS[args.kind](src_state, **options)
                # the model's layers that no torchvision file of this kind holds keep their initialisation
                uncovered = {k for k in model.state_dict() if not from_torchvision(args.kind, k)}
            else:
                model, uncovered = MODELS.build(model_cfg), set()
                state = CONVERTERS[args.kind](src_state)
            check_fits(state, model, f'{args.src} ({args.kind})', uncovered=uncovered)
    except (OutputPathError, ValueError, FileNotFoundError, CheckpointError) as err:  # one line naming the file
        raise SystemExit(str(err)) from None
    meta = {'converted_from': os.path.basename(args.src), 'kind': args.kind}
    classes = coco_class_names(args.kind, state)
    if classes:
        meta['dataset_meta'] = {'classes': classes}
    save_checkpoint({'state_dict': state, 'meta': meta}, args.dst)
    print(f'wrote {len(state)} tensors to {args.dst}')


if __name__ == '__main__':
    run_tool(main)
