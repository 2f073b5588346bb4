"""Print a detector's parameter count and the FLOPs of one forward pass (raw head outputs, no post-processing).

    python tools/analysis/get_flops.py configs/ssd/ssd300_voc0712.py [--shape H W] [--cfg-options KEY=VALUE ...]

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` from the operators the forward pass runs
(convolutions and matrix products: a multiply-add is 2 FLOPs). Many papers and model zoos (mmcv's get_flops,
fvcore) report multiply-adds and call them FLOPs; both are printed. Element-wise work (ReLU, batch norm in eval
mode, L2Norm) is not counted, as in those tools.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from detkit.registry import MODELS  # noqa: E402
from detkit.utils import load_config  # noqa: E402
from detkit.utils.config import DictAction  # noqa: E402
from detkit.utils.errors import run_tool  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help="input height and width (default: the anchors' input size, else the test pipeline's "
                             "Resize scale, else 300 300)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys, KEY=VALUE')
    return parser.parse_args(argv)


def count(model: torch.nn.Module, shape: tuple[int, int]) -> dict[str, float]:
    """Parameters and per-part FLOPs of ``model`` on a ``(1, 3, *shape)`` input."""
    counter = FlopCounterMode(display=False, depth=1)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, *shape))
    by_module = counter.get_flop_counts()
    parts = {}
    for name, child in model.named_children():
        parts[name] = sum(by_module.get(f'{type(model).__name__}.{name}', {}).values())
    return {'params': sum(p.numel() for p in model.parameters()), 'flops': counter.get_total_flops(), 'parts': parts}


def default_shape(cfg, model: torch.nn.Module) -> tuple[int, int]:
    """``(h, w)``: the anchors' input size when they have one, else the test pipeline's Resize scale (the largest
    image a keep-ratio resize gives, e.g. 800 x 1333), else 300 x 300."""
    size = getattr(getattr(getattr(model, 'bbox_head', None), 'anchor_generator', None), 'input_size', None)
    if size is not None:
        return (size, size) if isinstance(size, int) else tuple(size)
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader') or {}
    dataset = loader.get('dataset') or {}
    while 'pipeline' not in dataset and ('dataset' in dataset or 'datasets' in dataset):
        dataset = dataset['dataset'] if 'dataset' in dataset else dataset['datasets'][0]
    for step in dataset.get('pipeline', []):
        if step.get('type') == 'Resize' and step.get('scale') is not None:
            w, h = (step['scale'],) * 2 if isinstance(step['scale'], int) else step['scale']
            return int(h), int(w)
    return 300, 300


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    model = MODELS.build(cfg.model).eval()
    shape = tuple(args.shape) if args.shape else default_shape(cfg, model)
    stats = count(model, shape)
    line = '=' * 64
    print(line)
    print(f'config:      {args.config}')
    print(f'input shape: (1, 3, {shape[0]}, {shape[1]})')
    print(f'parameters:  {stats["params"]:,} ({stats["params"] / 1e6:.3f} M)')
    print(f'FLOPs:       {stats["flops"] / 1e9:.3f} G   (multiply-add = 2 FLOPs)')
    print(f'MACs:        {stats["flops"] / 2e9:.3f} G   (what mmcv / fvcore print as "FLOPs")')
    for name, flops in stats['parts'].items():
        print(f'  {name:<12} {flops / 1e9:8.3f} GFLOPs')
    print(line)


if __name__ == '__main__':
    run_tool(main)
