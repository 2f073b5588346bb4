"""Train a detector.

    python tools/train.py configs/quickstart/ssd_shapes.py
    python tools/train.py CONFIG --work-dir work_dirs/x --amp --cfg-options train_cfg.max_epochs=6
    python tools/train.py CONFIG --resume            # continue from the latest epoch_N.pth in the work dir
    torchrun --nproc_per_node=8 tools/train.py CONFIG --launcher pytorch --auto-scale-lr   # or tools/dist_train.sh
"""
from __future__ import annotations

import argparse
import os.path as osp

from detkit.engine import Trainer, destroy_dist, init_dist
from detkit.engine.work_dir import WorkDirError, WorkDirLock, write_work_dir_file
from detkit.utils.config import DictAction, load_config
from detkit.utils.errors import run_tool


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Train a detector')
    p.add_argument('config', help='config file')
    p.add_argument('--work-dir', help='where logs and checkpoints go (default: the config\'s work_dir if it sets one, '
                   'else work_dirs/<config name>)')
    p.add_argument('--resume', nargs='?', const='auto', default=None, metavar='PATH|auto',
                   help='resume from a checkpoint; without a value (or "auto") from the latest in the work dir')
    p.add_argument('--amp', action='store_true', help='mixed precision (float16 on CUDA, bfloat16 on CPU)')
    p.add_argument('--auto-scale-lr', action='store_true',
                   help='scale the lr linearly by total batch / auto_scale_lr.base_batch_size')
    p.add_argument('--seed', type=int, help='random seed (default: the config\'s seed)')
    p.add_argument('--device', choices=['cpu', 'cuda'], help='default: cuda when available')
    p.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                   help='"pytorch" when started by torchrun (distributed training)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                   help='override config entries, e.g. train_cfg.max_epochs=6 optim_wrapper.optimizer.lr=0.01')
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    config_name = osp.splitext(osp.basename(args.config))[0]
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join('work_dirs', config_name)
    if args.resume is not None:
        cfg.resume = args.resume
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
    if args.auto_scale_lr:
        if not cfg.get('auto_scale_lr') or 'base_batch_size' not in cfg.auto_scale_lr:
            raise SystemExit(f'--auto-scale-lr: {args.config} has no auto_scale_lr.base_batch_size (the total batch '
                             'size its lr was tuned for)')
        cfg.auto_scale_lr.enable = True
    if args.seed is not None:
        cfg.seed = args.seed
    if args.device is not None:
        cfg.device = args.device
    cfg.launcher = args.launcher

    device = cfg.get('device') or ('cuda' if _cuda_available() else 'cpu')
    rank, _, _ = init_dist(args.launcher, device)
    # rank 0 holds the work dir from before the config dump: a second run must not overwrite the running one's
    lock = WorkDirLock(cfg.work_dir) if rank == 0 else None
    try:
        if lock is not None:
            # before any work: a work dir that cannot be created or written, a link in it, or another run holding
            # it is one line here, not a traceback
            lock.acquire()
            # the final config, after --cfg-options and flags; tools/train.py can be re-run on it (never written
            # through a symbolic link)
            write_work_dir_file(osp.join(cfg.work_dir, osp.basename(args.config)), cfg.dump())
        Trainer.from_config(cfg).train()
    except WorkDirError as err:  # includes WorkDirBusyError; also another run's checkpoints in the way
        raise SystemExit(f'error: {err}') from None
    finally:
        if lock is not None:
            lock.release()
        destroy_dist()


def _cuda_available() -> bool:
    import torch  # noqa: PLC0415
    return torch.cuda.is_available()


if __name__ == '__main__':
    run_tool(main)
