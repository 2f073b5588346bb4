"""Convert an mmdetection 3.x checkpoint (SSD300/512, SSDLite-MobileNetV2, RetinaNet R50-FPN) into detkit's.

    python tools/model_converters/mmdet_to_detkit.py ssd300_coco_20210803_015428-d231a06e.pth ssd300_detkit.pth \\
        --config configs/ssd/ssd300_coco.py

The detkit configs of the same models: ``configs/ssd/ssd300_coco.py``, ``ssd512_coco.py``,
``ssdlite_mobilenetv2_coco.py``, ``configs/retinanet/retinanet_r50_fpn_1x_coco.py`` (and the VOC ones for VOC
checkpoints), whose test settings are mmdetection's. Classes stay as they are (mmdetection's softmax background is
last, as detkit's); the class names the checkpoint stores (``meta.dataset_meta.classes`` in 3.x, ``meta.CLASSES``
in 2.x) are carried over. With ``--config`` every converted key is checked against the config's model (nothing
missing, nothing left over, same shapes). The output holds ``{'state_dict', 'meta'}`` and loads with
``torch.load(weights_only=True)`` and ``detkit.apis.init_detector``.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from detkit.engine.checkpoint import save_checkpoint  # noqa: E402
from detkit.models.utils.converters import check_fits, convert_mmdet  # noqa: E402
from detkit.models.utils.weights import load_weight_file  # noqa: E402
from detkit.utils.errors import run_tool  # noqa: E402
from detkit.utils.file_io import OutputPathError, check_output_file  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='mmdetection checkpoint')
    parser.add_argument('dst', help='detkit checkpoint to write')
    parser.add_argument('--config', help='the detkit config whose model the weights must fit exactly (checked)')
    args = parser.parse_args(argv)
    try:  # before the conversion: a writable destination that is not the source
        check_output_file(args.dst, [args.src, args.config], 'dst')
    except OutputPathError as err:
        raise SystemExit(str(err)) from None
    src_state, src_meta = load_weight_file(args.src)
    state = convert_mmdet(src_state)
    if args.config:
        from detkit.registry import MODELS
        from detkit.utils import load_config

        check_fits(state, MODELS.build(load_config(args.config).model), args.src)
    meta = {'converted_from': os.path.basename(args.src), 'kind': 'mmdet'}
    classes = (src_meta.get('dataset_meta') or {}).get('classes') or src_meta.get('CLASSES')
    if classes:
        meta['dataset_meta'] = {'classes': tuple(str(c) for c in classes)}
    save_checkpoint({'state_dict': state, 'meta': meta}, args.dst)
    print(f'wrote {len(state)} tensors to {args.dst}')


if __name__ == '__main__':
    run_tool(main)
