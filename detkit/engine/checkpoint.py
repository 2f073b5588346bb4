"""Checkpoints: atomic writes, safe (``weights_only``) reads, RNG states as tensors, finding the latest one.

A detkit checkpoint is a dict of tensors and plain containers only, so it loads with
``torch.load(weights_only=True)`` (no pickled classes, no code run on load)::

    {'meta': {'epoch', 'iter', 'seed', 'world_size', 'dataset_meta', 'config', 'best_score', 'best_ckpt',
              'detkit_version', 'time', 'run_id', 'run_start'},
     'state_dict': model weights,
     'optimizer': optimizer state, 'param_schedulers': scheduler state, 'grad_scaler': AMP scaler state or None,
     'rng_states': [per-rank RNG states (python, numpy, torch CPU, CUDA)]}   # see detkit.engine.rng

``epoch`` and ``iter`` count what was *completed* when the checkpoint was written: resuming from
``epoch_3.pth`` starts the fourth epoch.

``run_id`` names the training run that wrote the checkpoint (its start time and a random suffix; a resumed run
keeps the id of the checkpoint it resumes) and ``run_start`` is that run's start (seconds since the epoch). The
trainer rotates, replaces and deletes only checkpoints whose ``run_id`` is its own, and :func:`find_latest_checkpoint`
picks by them, so several runs can share a work dir without one destroying or resuming another's files.
Checkpoints of older detkit versions have neither key: they belong to no run (never deleted by a trainer).
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from detkit.utils.checkpoint_io import CheckpointError, load_checkpoint, load_model_weights
from detkit.utils.errors import ConfigError

__all__ = [
    'CheckpointError', 'save_checkpoint', 'load_checkpoint', 'load_model_weights', 'find_latest_checkpoint',
    'list_epoch_checkpoints', 'to_checkpoint_safe', 'new_run_id', 'checkpoint_meta', 'check_checkpoint_classes'
]

#: ``epoch_<N>.pth``, written by the trainer after epoch N
EPOCH_CKPT = re.compile(r'^epoch_(\d+)\.pth$')
_PRIMITIVES = (str, int, float, bool, type(None))
_DROP = object()  # marks a value to_checkpoint_safe leaves out


def _check_safe(obj: Any, where: str) -> None:
    """Raise ``TypeError`` naming the key path of the first value ``weights_only`` loading would reject."""
    if isinstance(obj, (torch.Tensor, torch.Size) + _PRIMITIVES):
        return
    if isinstance(obj, dict):  # includes OrderedDict (model state dicts)
        for k, v in obj.items():
            if not isinstance(k, _PRIMITIVES):
                raise TypeError(f'checkpoint key {where}[{k!r}] is a {type(k).__name__}; keys must be plain values')
            _check_safe(v, f'{where}[{k!r}]')
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_safe(v, f'{where}[{i}]')
        return
    raise TypeError(f'checkpoint value {where} is a {type(obj).__name__}; only tensors and plain containers '
                    '(dict, list, tuple, str, int, float, bool, None) load with torch.load(weights_only=True)')


def to_checkpoint_safe(obj: Any) -> Any:
    """A copy of ``obj`` keeping only what a ``weights_only`` checkpoint can hold (other values are dropped).

    Used for ``dataset_meta`` (class names, palette), which may hold numpy values or arbitrary objects.
    """
    if isinstance(obj, (torch.Tensor,) + _PRIMITIVES):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            v = to_checkpoint_safe(v)
            if isinstance(k, _PRIMITIVES) and v is not _DROP:
                out[k] = v
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_checkpoint_safe(v) for v in obj]
        items = [v for v in items if v is not _DROP]
        return tuple(items) if isinstance(obj, tuple) else items
    return _DROP


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``checkpoint`` to ``path`` atomically.

    The bytes go to a temporary file in the same directory (``.<name>.<random>.tmp``), are flushed and fsync'ed,
    and the file is then renamed over ``path`` (``os.replace`` is atomic on POSIX): a crash or a full disk leaves
    either the old file or the new one, never a half-written checkpoint (a ``kill -9`` can leave the temporary
    file, which the trainer removes when it next starts in that work dir). The file gets the mode ``open`` would
    give it (``0666`` minus the umask), not ``mkstemp``'s ``0600``.

    Symbolic links are never written through: the temporary file is created with ``O_EXCL`` (``mkstemp``), and
    when ``path`` is a link the rename replaces the link itself, never the file it points to.

    Raises:
        TypeError: naming the key of a value that ``torch.load(weights_only=True)`` could not read back.
    """
    path = os.fspath(path)
    _check_safe(checkpoint, 'checkpoint')
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
    try:
        # mkstemp creates the file 0600; give it the mode open() (and so torch.save(path)) would: 0666 - umask
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, 'wb') as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    # make the rename itself durable
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening a directory
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _current_umask() -> int:
    """This process's umask, read without changing it where Linux allows (``os.umask`` can only set it)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def new_run_id() -> tuple[str, float]:
    """A new training run's ``(run_id, run_start)``: ``'<YYYYmmdd_HHMMSS>_<8 hex digits>'`` and ``time.time()``."""
    now = time.time()
    return f'{time.strftime("%Y%m%d_%H%M%S", time.localtime(now))}_{secrets.token_hex(4)}', now


def checkpoint_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``meta`` dict of a checkpoint, read cheaply (the tensors are memory-mapped, not read).

    Returns:
        ``meta`` (``{}`` when the file has none), or ``None`` when the file cannot be read as a checkpoint.
    """
    try:
        meta = load_checkpoint(path, mmap=True).get('meta')
    except (OSError, CheckpointError):
        return None
    return meta if isinstance(meta, dict) else {}


def find_latest_checkpoint(work_dir: str | os.PathLike, logger: logging.Logger | None = None) -> str | None:
    """The ``epoch_N.pth`` in ``work_dir`` to resume from, or ``None``.

    That is the checkpoint of the most recent run (the largest ``meta['run_start']``) with the most completed
    iterations (``meta['iter']``): not the largest ``N``, which may be another, older run's. Checkpoints without
    ``run_start`` (older detkit versions) rank below every run that has one, among themselves by ``iter`` and then
    ``N``. A file that cannot be read as a checkpoint is skipped with a warning naming it.
    """
    work_dir = os.fspath(work_dir)
    if not os.path.isdir(work_dir):
        return None
    ranked = []
    for n, path in list_epoch_checkpoints(work_dir):
        meta = checkpoint_meta(path)
        if meta is None:
            (logger or logging.getLogger('detkit')).warning(
                f'resume=auto: skipped {path}: it cannot be read as a checkpoint')
            continue
        start = meta.get('run_start')
        ranked.append((start is not None, float(start or 0), str(meta.get('run_id', '')), int(meta.get('iter', 0)),
                       n, path))
    return max(ranked)[-1] if ranked else None


def check_checkpoint_classes(meta: dict[str, Any] | None, classes: Sequence[str] | None,
                             checkpoint: str | os.PathLike, action: str) -> None:
    """Refuse to use a checkpoint on a dataset whose class list is not the one it was trained on.

    Label ``i`` means the ``i``-th class name, so another order (or another list) gives wrong labels with no
    error: a resume would go on training with permuted labels, a test would score the wrong classes.

    Args:
        meta: the checkpoint's ``meta``; without ``dataset_meta['classes']`` (converted or bare weights) nothing
            is checked.
        classes: the dataset's class names (``None``: nothing is checked).
        checkpoint: the checkpoint's path, for the message.
        action: what is refused, for the message (``'resume from'``, ``'test'``).

    Raises:
        ConfigError: a ``ValueError`` naming the checkpoint and both class lists.
    """
    trained = ((meta or {}).get('dataset_meta') or {}).get('classes')
    if not trained or not classes or list(trained) == list(classes):
        return
    raise ConfigError(
        f'cannot {action} {os.fspath(checkpoint)}: it was trained on the classes {list(trained)}, the dataset has '
        f'{list(classes)} (label i is the i-th name, so another order or list gives wrong labels). Use the same '
        'classes in the same order; a new class list is a fine-tune: start a new run from its weights with '
        f'load_from={os.fspath(checkpoint)!r}')


def list_epoch_checkpoints(work_dir: str | os.PathLike) -> list[tuple[int, str]]:
    """``(epoch, path)`` of every ``epoch_N.pth`` in ``work_dir``, oldest first."""
    work_dir = os.fspath(work_dir)
    found = [(int(m.group(1)), os.path.join(work_dir, name)) for name in os.listdir(work_dir)
             if (m := EPOCH_CKPT.match(name))]
    return sorted(found)
