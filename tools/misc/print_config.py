"""Print the final config (after _base_ inheritance and --cfg-options), optionally saving it as a loadable file.

    python tools/misc/print_config.py configs/ssd/ssd300_voc0712.py --cfg-options model.bbox_head.num_classes=3
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from detkit.utils.config import DictAction, load_config  # noqa: E402
from detkit.utils.errors import run_tool  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file path')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override settings, e.g. model.bbox_head.num_classes=3 train_cfg.max_epochs=2')
    parser.add_argument('--save-path', help='also write the final config here (a .py file load_config reads back)')
    args = parser.parse_args()
    cfg = load_config(args.config, args.cfg_options)
    print(cfg.pretty_text)
    if args.save_path:
        cfg.dump(args.save_path)
        print(f'saved to {args.save_path}')


if __name__ == '__main__':
    run_tool(main)
