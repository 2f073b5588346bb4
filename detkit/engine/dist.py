"""Distributed helpers: process-group setup for ``torchrun``, and the collectives the engine needs.

Ranks, barriers and collectives are mmengine's (``mmengine.dist``); detkit adds the process-group setup, which
must work on CPU-only machines, and two adapters from Python values to mmengine's tensor collectives. Every
helper also works in a plain single process (no process group), where it is a no-op or returns the
single-process answer, so the training loop has no ``if distributed`` branches of its own.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from mmengine.dist import (all_gather_object, all_reduce, all_reduce_dict, barrier, broadcast_object_list,
                           get_rank, get_world_size, is_distributed, is_main_process)

__all__ = [
    'init_dist', 'is_distributed', 'get_rank', 'get_world_size', 'is_main_process', 'barrier',
    'all_gather_object', 'broadcast_object', 'all_reduce_mean', 'any_across_ranks', 'destroy_dist'
]


# Kept by hand: mmengine's init_dist calls torch.cuda.set_device for every launch, which fails without a GPU (gloo).
def init_dist(launcher: str, device: str = 'cuda', timeout_s: int = 1800) -> tuple[int, int, int]:
    """Join the process group described by the environment that ``torchrun`` sets.

    ``torchrun`` exports ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; multi-node
    runs use torchrun's own flags (``--nnodes``, ``--node_rank``, ``--master_addr``, ``--master_port``).

    Args:
        launcher: ``'none'`` (single process: nothing to do) or ``'pytorch'`` (``torchrun``).
        device: ``'cuda'`` uses NCCL and pins this process to GPU ``LOCAL_RANK``; ``'cpu'`` uses gloo.
        timeout_s: how long a collective may wait for the slowest rank before failing.

    Returns:
        ``(rank, world_size, local_rank)``.
    """
    if launcher == 'none':
        return 0, 1, 0
    if launcher != 'pytorch':
        raise ValueError(f"--launcher must be 'none' or 'pytorch' (torchrun), got {launcher!r}")
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch expects the environment that torchrun sets; missing {missing}. '
                           'Start with: torchrun --nproc_per_node=N tools/train.py CONFIG --launcher pytorch')
    local_rank = int(os.environ['LOCAL_RANK'])
    if device.startswith('cuda'):
        if not torch.cuda.is_available():
            raise RuntimeError('--device cuda with --launcher pytorch, but CUDA is not available; use --device cpu')
        torch.cuda.set_device(local_rank)
        backend = 'nccl'
    else:
        backend = 'gloo'
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size(), local_rank


def destroy_dist() -> None:
    """Leave the process group, if one was joined."""
    if is_distributed():
        dist.destroy_process_group()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (``obj`` itself in a single process)."""
    box = [obj]
    broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """The mean over ranks of each value (the same keys on every rank); used for the logged losses."""
    if not is_distributed() or not values:
        return values
    tensors = {k: torch.tensor(float(v), dtype=torch.float64) for k, v in values.items()}
    all_reduce_dict(tensors, op='mean')  # moves them to the backend's device and back (NCCL: CUDA)
    return {k: float(tensors[k]) for k in values}


def any_across_ranks(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one rank.

    Used before ``backward`` so that a rank that sees a NaN loss and the ranks that do not stop together,
    instead of the healthy ranks waiting forever in the gradient all-reduce.
    """
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    all_reduce(t, op='max')
    return bool(t.item())
