"""Process-wide settings from a config's ``env_cfg``, applied once before any data loader starts its workers."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import torch

__all__ = ['setup_env']


def setup_env(env_cfg: Mapping[str, Any] | None, device_type: str = 'cpu') -> None:
    """Apply ``env_cfg``: ``num_threads`` (torch intra-op threads; ``None`` leaves torch's default),
    ``opencv_num_threads`` (default ``0``) and, on CUDA, ``cudnn_benchmark`` (default ``False``).

    ``opencv_num_threads=0`` turns OpenCV's own thread pool off in this process, and so in the data-loader workers
    it forks, as mmengine does: workers are the parallelism, and a pool per worker would oversubscribe the cores.
    It has to be set here, in the parent: calling ``cv2.setNumThreads`` inside a forked worker whose parent had
    already run OpenCV's pool deadlocks the worker (it waits on the pool's threads, which fork did not copy).
    """
    env_cfg = env_cfg or {}
    if env_cfg.get('num_threads'):
        torch.set_num_threads(int(env_cfg['num_threads']))
    opencv_threads = env_cfg.get('opencv_num_threads', 0)
    if opencv_threads is not None:
        cv2.setNumThreads(int(opencv_threads))
    if device_type == 'cuda':
        torch.backends.cudnn.benchmark = bool(env_cfg.get('cudnn_benchmark', False))
