"""Convert a local torchvision weight file into a detkit checkpoint.

    python tools/model_converters/torchvision_to_detkit.py ssd300_vgg16 ssd300_vgg16_coco-b556d3b4.pth out.pth

Kinds:
    ssd300_vgg16  a whole ``torchvision.models.detection.ssd300_vgg16`` detector -> SSD300-VGG16 detector keys
                  (``configs/ssd/ssd300_coco.py`` with ``model.bbox_head.num_classes`` = torchvision's classes - 1;
                  torchvision's COCO model has 91 classes, so 90). The background moves from the first to the last
                  class. torchvision feeds it RGB minus (123, 117, 104), not divided by a std: the SSD configs'
                  Normalize(std=[1, 1, 1]).
    vgg16         ``torchvision.models.vgg16`` -> SSDVGG backbone keys (conv1_1 .. conv5_3).
    resnet        ``torchvision.models.resnet*`` -> ResNet backbone keys (``fc`` dropped).

Backbones read torchvision files directly (``backbone=dict(..., pretrained=PATH)``); converting them is only
needed to inspect or ship the converted keys. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from detkit.models.utils.weights import (convert_torchvision_resnet, convert_torchvision_ssd300_vgg16,  # noqa: E402
                                         convert_torchvision_vgg16, load_state_dict_file)

CONVERTERS = {
    'ssd300_vgg16': convert_torchvision_ssd300_vgg16,
    'vgg16': convert_torchvision_vgg16,
    'resnet': convert_torchvision_resnet,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('kind', choices=sorted(CONVERTERS), help='what the torchvision file holds')
    parser.add_argument('src', help='torchvision weight file')
    parser.add_argument('dst', help='detkit checkpoint to write ({"state_dict": ...})')
    args = parser.parse_args(argv)
    state = CONVERTERS[args.kind](load_state_dict_file(args.src))
    torch.save({'state_dict': state, 'meta': {'converted_from': os.path.basename(args.src), 'kind': args.kind}},
               args.dst)
    print(f'wrote {len(state)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
