"""Reading ``torch.save`` files safely, with one set of error messages for every entry point.

Checkpoints (``load_from``, ``--resume``, ``tools/test.py``, ``init_detector``) and pretrained weight files
(``pretrained=`` / ``init_cfg``) are all read by :func:`read_torch_file`: ``torch.load(weights_only=True)``, so a
file can hold tensors and plain containers but never makes Python run code, and a file that cannot be read is a
:class:`CheckpointError` naming it and saying which of two things is wrong:

* the file is truncated or corrupt (or not a PyTorch file at all): use another copy;
* the file holds pickled Python objects (classes, functions): detkit does not load it.

torch's own message for the second case advises ``weights_only=False``, which would run whatever code the file
carries; detkit never repeats that advice.

:func:`load_checkpoint` (a checkpoint dict) and :func:`load_model_weights` (its weights into a model) live here
rather than in the engine, so that inference (:mod:`detkit.apis`) loads weights without the training engine.
"""
from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

__all__ = ['CheckpointError', 'read_torch_file', 'load_checkpoint', 'load_model_weights']


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, corrupt, or holding objects other than tensors)."""


# "Unsupported global: GLOBAL __main__.Foreign was not an allowed global by default" (torch's weights-only unpickler)
_GLOBAL = re.compile(r'Unsupported global: GLOBAL ([\w.]+)')


def read_torch_file(path: str | os.PathLike, map_location: str | torch.device = 'cpu', *,
                    what: str = 'checkpoint', missing_hint: str = '', mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file.

    Args:
        path: the file.
        map_location: where tensors go.
        what: the file's role in messages (``'checkpoint'``, ``'weight file'``).
        missing_hint: appended to the not-found message.
        mmap: map the tensors' storage instead of reading it (``torch.load(mmap=True)``).

    Raises:
        FileNotFoundError: naming ``path`` when it does not exist.
        CheckpointError: naming ``path`` when the file is truncated or corrupt, or holds pickled objects.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}{missing_hint}')
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, OSError, ... by the damage
        text = str(e)
        found = _GLOBAL.search(text)
        if found:
            raise CheckpointError(
                f'cannot load {what} {path}: it holds pickled Python objects ({found.group(1)}), not only tensors '
                'and plain containers, so detkit does not load it (loading it could run code from the file). Save '
                'the weights alone where the file was made: torch.save(model.state_dict(), path)') from None
        raise CheckpointError(
            f'cannot load {what} {path} ({os.path.getsize(path)} bytes): the file is truncated or corrupt, or not a '
            f'PyTorch file ({type(e).__name__}: {_reason(text)}). Use another copy, or an earlier checkpoint.'
        ) from None


def _reason(text: str) -> str:
    """The informative part of torch's message, without its advice about ``weights_only``."""
    if 'WeightsUnpickler error:' in text:  # torch's reason comes after its advice
        text = text.split('WeightsUnpickler error:', 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and 'weights_only' not in line]
    return lines[0][:200] if lines else 'no details'


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = 'cpu', *,
                    mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` (:func:`read_torch_file`).

    ``mmap=True`` maps the tensors' storage instead of reading it: reading only ``meta`` then costs nothing.

    Raises:
        FileNotFoundError: naming ``path`` when it does not exist.
        CheckpointError: naming ``path`` when the file is truncated or corrupt, or holds pickled objects.
    """
    path = os.fspath(path)
    ckpt = read_torch_file(path, map_location, what='checkpoint', mmap=mmap)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'checkpoint {path} holds a {type(ckpt).__name__}, expected a dict')
    return ckpt


def load_model_weights(model: nn.Module, checkpoint: str | os.PathLike | dict[str, Any], strict: bool = True,
                       map_location: str | torch.device = 'cpu') -> dict[str, Any]:
    """Load a checkpoint's weights into ``model``.

    Args:
        model: the (unwrapped) detector.
        checkpoint: a path, or an already loaded checkpoint dict. A bare state dict (no ``state_dict`` key)
            is accepted too; a ``module.`` prefix left by ``DistributedDataParallel`` is removed.
        strict: passed to ``load_state_dict``; with ``False`` the weights that do not match are logged.

    Returns:
        The checkpoint's ``meta`` dict (empty when it has none).
    """
    ckpt = load_checkpoint(checkpoint, map_location) if not isinstance(checkpoint, dict) else checkpoint
    state = ckpt.get('state_dict', ckpt)
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f'checkpoint {checkpoint if not isinstance(checkpoint, dict) else ""} has no '
                              f'"state_dict" of tensors (keys: {sorted(ckpt)[:10]})')
    if state and all(k.startswith('module.') for k in state):
        state = OrderedDict((k[len('module.'):], v) for k, v in state.items())
    result = model.load_state_dict(state, strict=strict)
    if result.missing_keys or result.unexpected_keys:  # only reached with strict=False
        logging.getLogger('detkit').warning(
            f'loaded {checkpoint if not isinstance(checkpoint, dict) else "checkpoint"} partially: '
            f'{len(result.missing_keys)} weights not in the checkpoint ({result.missing_keys[:5]}...), '
            f'{len(result.unexpected_keys)} checkpoint weights unused ({result.unexpected_keys[:5]}...)')
    return dict(ckpt.get('meta', {}))
