"""Convert an official M2Det VGG16 checkpoint (VDIGPKU/M2Det, formerly qijiezhao/M2Det) into a detkit checkpoint.

    python tools/model_converters/m2det_to_detkit.py m2det320_vgg.pth m2det320_detkit.pth \\
        --config configs/m2det/m2det320_vgg_coco.py
    # then: detkit.apis.init_detector('configs/m2det/m2det320_vgg_coco.py', 'm2det320_detkit.pth')

The official M2Det320 and M2Det512 VGG16 COCO checkpoints (81 classes, background first) fit
``configs/m2det/m2det320_vgg_coco.py`` and ``configs/m2det/m2det512_vgg_coco.py``; the background moves to the last
class, so detkit label k is the official class k + 1 (COCO's k-th category). The official FFMv2 ("leach") convs are
one module saved under every index: a checkpoint whose copies differ is refused. With ``--config`` every converted
key is checked against the config's model (nothing missing, nothing left over, same shapes). The output holds
``{'state_dict', 'meta'}`` and loads with ``torch.load(weights_only=True)`` and ``detkit.apis.init_detector``.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from detkit.engine.checkpoint import save_checkpoint  # noqa: E402
from detkit.models.utils.converters import check_fits, convert_m2det_official  # noqa: E402
from detkit.models.utils.weights import load_state_dict_file  # noqa: E402
from detkit.utils.errors import run_tool  # noqa: E402
from detkit.utils.file_io import OutputPathError, check_output_file  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official M2Det checkpoint (a state dict, possibly with a "module." prefix)')
    parser.add_argument('dst', help='detkit checkpoint to write')
    parser.add_argument('--config', help='a detkit M2Det config whose model the weights must fit exactly (checked)')
    args = parser.parse_args(argv)
    try:  # before the conversion: a writable destination that is not the source
        check_output_file(args.dst, [args.src, args.config], 'dst')
    except OutputPathError as err:
        raise SystemExit(str(err)) from None
    state = convert_m2det_official(load_state_dict_file(args.src))
    if args.config:
        from detkit.registry import MODELS
        from detkit.utils import load_config

        check_fits(state, MODELS.build(load_config(args.config).model), args.src)
    save_checkpoint({'state_dict': state, 'meta': {'converted_from': os.path.basename(args.src), 'kind': 'm2det'}},
                    args.dst)
    print(f'wrote {len(state)} tensors to {args.dst}')


if __name__ == '__main__':
    run_tool(main)
