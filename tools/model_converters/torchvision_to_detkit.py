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
(``meta.dataset_meta.classes``, what ``init_detector`` reads), in detkit's label order. With ``--config`` every
converted key is checked against the model the config builds (nothing missing, nothing left over, same shapes).
Backbones read torchvision files directly (``backbone=dict(..., pretrained=PATH)`` or ``'torchvision://NAME'``);
converting them is only needed to inspect or ship the converted keys. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from detkit.models.utils.weights import (convert_torchvision_mobilenet_v2, convert_torchvision_resnet,  # noqa: E402
                                         convert_torchvision_retinanet_resnet50_fpn,
                                         convert_torchvision_ssd300_vgg16, convert_torchvision_vgg16,
                                         load_state_dict_file)

CONVERTERS = {
    'ssd300_vgg16': convert_torchvision_ssd300_vgg16,
    'retinanet_resnet50_fpn': convert_torchvision_retinanet_resnet50_fpn,
    'vgg16': convert_torchvision_vgg16,
    'resnet': convert_torchvision_resnet,
    'mobilenet_v2': convert_torchvision_mobilenet_v2,
}


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
    parser.add_argument('--config', help='a detkit config whose model the weights must fit exactly (checked)')
    args = parser.parse_args(argv)
    state = CONVERTERS[args.kind](load_state_dict_file(args.src))
    if args.config:
        from detkit.models.utils.converters import check_fits
        from detkit.registry import MODELS
        from detkit.utils import load_config

        check_fits(state, MODELS.build(load_config(args.config).model), f'{args.src} ({args.kind})')
    meta = {'converted_from': os.path.basename(args.src), 'kind': args.kind}
    classes = coco_class_names(args.kind, state)
    if classes:
        meta['dataset_meta'] = {'classes': classes}
    torch.save({'state_dict': state, 'meta': meta}, args.dst)
    print(f'wrote {len(state)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
