"""Helpers shared by the benchmarks: timing with medians and a description of the machine."""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch


def machine() -> str:
    """One line naming the CPU, core count, torch version and thread count."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = f', GPU {torch.cuda.get_device_name(0)}' if torch.cuda.is_available() else ''
    return (f'{cpu}, {os.cpu_count()} cores, torch {torch.__version__} '
            f'({torch.get_num_threads()} threads){gpu}, Python {platform.python_version()}')


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1, sync: bool = False) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_median_times(fns: list[Callable[[], object]], repeats: int, warmup: int = 1) -> list[float]:
    """Median wall time of each ``fn()`` in seconds, the functions run in turn within each repeat.

    Interleaved, so that load from other processes hits every function alike, and each repeat starts with the
    next function, so that none always runs right after the same other one (memory just freed, caches filled).
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        for k in range(len(fns)):
            i = (r + k) % len(fns)
            t0 = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def fmt_seconds(t: float) -> str:
    if t >= 1:
        return f'{t:.2f} s'
    if t >= 1e-3:
        return f'{t * 1e3:.2f} ms'
    return f'{t * 1e6:.0f} us'


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return '\n'.join(lines)
