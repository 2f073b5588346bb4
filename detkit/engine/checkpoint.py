"""Checkpoints: atomic writes, safe (``weights_only``) reads, RNG states as tensors, finding the latest one.

A detkit checkpoint is a dict of tensors and plain containers only, so it loads with
``torch.load(weights_only=True)`` (no pickled classes, no code run on load)::

    {'meta': {'epoch', 'iter', 'seed', 'world_size', 'dataset_meta', 'config', 'best_score', 'best_ckpt',
              'detkit_version', 'time'},
     'state_dict': model weights,
     'optimizer': optimizer state, 'param_schedulers': scheduler state, 'grad_scaler': AMP scaler state or None,
     'rng_states': [per-rank RNG states (python, numpy, torch CPU, CUDA)]}   # see detkit.engine.rng

``epoch`` and ``iter`` count what was *completed* when the checkpoint was written: resuming from
``epoch_3.pth`` starts the fourth epoch.
"""
from __future__ import annotations

import os
import re
import tempfile
from typing import Any

import numpy as np
import torch
from detkit.utils.checkpoint_io import CheckpointError, load_checkpoint, load_model_weights

__all__ = [
    'CheckpointError', 'save_checkpoint', 'load_checkpoint', 'load_model_weights', 'find_latest_checkpoint',
    'list_epoch_checkpoints', 'to_checkpoint_safe'
]

_EPOCH_CKPT = re.compile(r'^epoch_(\d+)\.pth$')
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


def find_latest_checkpoint(work_dir: str | os.PathLike) -> str | None:
    """The ``epoch_N.pth`` with the largest ``N`` in ``work_dir``, or ``None``."""
    work_dir = os.fspath(work_dir)
    if not os.path.isdir(work_dir):
        return None
    found = [(int(m.group(1)), name) for name in os.listdir(work_dir) if (m := _EPOCH_CKPT.match(name))]
    return os.path.join(work_dir, max(found)[1]) if found else None


def list_epoch_checkpoints(work_dir: str | os.PathLike) -> list[tuple[int, str]]:
    """``(epoch, path)`` of every ``epoch_N.pth`` in ``work_dir``, oldest first."""
    work_dir = os.fspath(work_dir)
    found = [(int(m.group(1)), os.path.join(work_dir, name)) for name in os.listdir(work_dir)
             if (m := _EPOCH_CKPT.match(name))]
    return sorted(found)
