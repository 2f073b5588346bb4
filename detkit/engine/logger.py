"""Training logs: console (through tqdm so progress bars stay intact), a text file, a JSON-lines file and
TensorBoard, all written by rank 0 only.

The JSON-lines file ``<work_dir>/<timestamp>.log.json`` holds one object per line::

    {"mode": "train", "epoch": 1, "iter": 50, "step": 50, "lr": 0.001, "loss": 3.2, "loss_cls": ..., "time": 0.21,
     "data_time": 0.01}
    {"mode": "val", "epoch": 1, "step": 500, "voc/mAP": 0.71, ...}

(``epoch`` and ``iter`` are 1-based, ``step`` is the global iteration); ``tools/analysis/plot_curves.py``
reads it. TensorBoard event files go to ``<work_dir>/tf_logs``.

No log is written through a symbolic link: the log files are opened with ``O_NOFOLLOW`` and a ``tf_logs`` that is
a link is refused (:class:`~detkit.engine.work_dir.WorkDirError` naming it).
"""
# Kept by hand: MMLogger is outside logging's tree (detkit.datasets warnings miss its file) and is reused across runs.
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from typing import Any

from tqdm import tqdm

from .work_dir import check_not_a_link, open_in_work_dir

__all__ = ['TrainLogger', 'get_logger', 'log_level_value']

_LOGGER_NAME = 'detkit'


class _TqdmHandler(logging.StreamHandler):
    """Writes records with ``tqdm.write`` so that a running progress bar is redrawn below them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stdout)
            self.flush()
        except Exception:  # logging must never stop training
            self.handleError(record)


class _NoFollowFileHandler(logging.FileHandler):
    """A ``FileHandler`` (append) that refuses to open its file through a symbolic link."""

    def _open(self):  # noqa: ANN202 (logging's signature)
        fd = open_in_work_dir(self.baseFilename, os.O_WRONLY | os.O_APPEND)
        return os.fdopen(fd, 'a', encoding=self.encoding, errors=self.errors)


def log_level_value(level: str | int) -> int:
    """A config's ``log_level`` (``'DEBUG'``, ``'INFO'``, ``'WARNING'``, ``'ERROR'``, ``'CRITICAL'`` or a number).

    Raises:
        ValueError: naming the value when it is not a logging level.
    """
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    names = ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')
    if isinstance(level, str) and level.upper() in names:
        return logging.getLevelName(level.upper())
    raise ValueError(f'log_level must be one of {names}, got {level!r}')


def get_logger(log_file: str | None = None, rank: int = 0, level: str | int = 'INFO') -> logging.Logger:
    """The ``detkit`` logger: ``level`` (the config's ``log_level``) to the console (and ``log_file``) on rank 0,
    errors only on other ranks. The dataset warnings (``detkit.datasets``) follow the same level."""
    logger = logging.getLogger(_LOGGER_NAME)
    logger.propagate = False
    fmt = logging.Formatter('%(asctime)s %(levelname)s %(message)s', datefmt='%Y-%m-%d %H:%M:%S')
    if not any(isinstance(h, _TqdmHandler) for h in logger.handlers):
        h = _TqdmHandler()
        h.setFormatter(fmt)
        logger.addHandler(h)
    for h in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
        logger.removeHandler(h)  # a new run in the same process logs to its own file
        h.close()
    if log_file is not None and rank == 0:
        fh = _NoFollowFileHandler(log_file, mode='a')
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    logger.setLevel(log_level_value(level) if rank == 0 else logging.ERROR)
    return logger


def _json_value(v: Any) -> Any:
    """A JSON-friendly number (numpy / tensor scalars become floats; NaN and inf become strings)."""
    if hasattr(v, 'item'):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class TrainLogger:
    """The three sinks of the training logs.

    Args:
        work_dir: where the text log, the JSON-lines log and ``tf_logs`` go.
        timestamp: names the log files of this run.
        enabled: False on ranks other than 0 (nothing is written there).
        tensorboard: also write TensorBoard event files.
        level: the lowest level logged (the config's ``log_level``).
    """

    def __init__(self, work_dir: str, timestamp: str, *, enabled: bool = True, tensorboard: bool = True,
                 level: str | int = 'INFO') -> None:
        self.enabled = enabled
        self.logger = get_logger(os.path.join(work_dir, f'{timestamp}.log') if enabled else None,
                                 rank=0 if enabled else 1, level=level)
        self.json_path = os.path.join(work_dir, f'{timestamp}.log.json')
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (slow import)
                tf_dir = os.path.join(work_dir, 'tf_logs')
                check_not_a_link(tf_dir)
                self.writer = SummaryWriter(tf_dir)
            except ImportError as e:
                self.logger.warning(f'TensorBoard logging is off: {e}')

    def info(self, msg: str) -> None:
        self.logger.info(msg)

    def warning(self, msg: str) -> None:
        self.logger.warning(msg)

    def write_json(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with os.fdopen(open_in_work_dir(self.json_path, os.O_WRONLY | os.O_APPEND), 'a') as f:
            f.write(json.dumps({k: _json_value(v) for k, v in record.items()}) + '\n')

    def log_train(self, *, epoch: int, max_epochs: int, iter_in_epoch: int, iters_per_epoch: int, step: int,
                  lr: float, values: dict[str, float], time_s: float, data_time_s: float,
                  memory_mb: float | None = None) -> None:
        """One training log line: averages of the losses (and grad norm) since the previous line."""
        if not self.enabled:
            return
        eta = time_s * ((max_epochs - epoch) * iters_per_epoch + iters_per_epoch - iter_in_epoch)
        parts = [f'Epoch [{epoch}/{max_epochs}][{iter_in_epoch}/{iters_per_epoch}]', f'lr: {lr:.4e}',
                 f'eta: {_format_eta(eta)}', f'time: {time_s:.3f}', f'data_time: {data_time_s:.3f}']
        if memory_mb is not None:
            parts.append(f'memory: {memory_mb:.0f}')
        parts += [f'{k}: {v:.4f}' for k, v in values.items()]
        self.logger.info('  '.join(parts))
        record = dict(mode='train', epoch=epoch, iter=iter_in_epoch, step=step, lr=lr, **values, time=time_s,
                      data_time=data_time_s)
        if memory_mb is not None:
            record['memory'] = memory_mb
        self.write_json(record)
        if self.writer is not None:
            self.writer.add_scalar('train/lr', lr, step)
            for k, v in values.items():
                self.writer.add_scalar(f'train/{k}', v, step)
            self.writer.add_scalar('train/time', time_s, step)

    def log_val(self, *, epoch: int, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        shown = '  '.join(f'{k}: {_format_metric(v)}' for k, v in metrics.items())
        self.logger.info(f'Epoch(val) [{epoch}]  {shown}')
        self.write_json(dict(mode='val', epoch=epoch, step=step, **metrics))
        if self.writer is not None:
            for k, v in metrics.items():
                if isinstance(_json_value(v), (int, float)):
                    self.writer.add_scalar(f'val/{k}', _json_value(v), epoch)
            self.writer.flush()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rem = divmod(seconds, 86400)
    text = time.strftime('%H:%M:%S', time.gmtime(rem))
    return f'{days} day, {text}' if days else text


def _format_metric(v: Any) -> str:
    v = _json_value(v)
    return f'{v:.4f}' if isinstance(v, float) else str(v)
