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

from .errors import DetkitError

__all__ = ['CheckpointError', 'read_torch_file', 'load_checkpoint', 'load_model_weights', 'describe_config']


class CheckpointError(DetkitError, RuntimeError):
    """A checkpoint file that cannot be read (truncated, corrupt, or holding objects other than tensors)."""


# torch's weights-only unpickler names the object it refuses in one of these wordings (torch 2.4 .. 2.14):
#   "Unsupported global: GLOBAL __main__.Foreign was not an allowed global by default"
#   "Trying to load unsupported GLOBAL posix.system whose module posix is blocked" (os, sys, posix, nt, ...)
#   "Can only build Tensor, Parameter, OrderedDict or types allowlisted via `add_safe_globals`, but got <class 'x.Y'>"
#   "Can only create new object for nn.Parameter or classes allowlisted via `add_safe_globals` but got <class 'x.Y'>"
#   "Trying to call reduce for unrecognized function <built-in function system>"
_PICKLED_OBJECT = (re.compile(r'unsupported (?:global: )?GLOBAL ([\w.]+)', re.IGNORECASE),
                   re.compile(r"allowlisted via `add_safe_globals`,? but got <class '([\w.]+)'>"),
                   re.compile(r'reduce for unrecognized function <?([^>\n]+)'))


def _pickled_object(text: str) -> str | None:
    """The object torch's weights-only unpickler refused (``'posix.system'``), or ``None`` for other failures."""
    for pattern in _PICKLED_OBJECT:
        found = pattern.search(text)
        if found:
            return found.group(1).strip().rstrip('.')
    return None


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
        found = _pickled_object(text)
        if found:
            raise CheckpointError(
                f'cannot load {what} {path}: it holds pickled Python objects ({found}), not only tensors '
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
                       map_location: str | torch.device = 'cpu', *, config: Any = None,
                       name: str | os.PathLike | None = None) -> dict[str, Any]:
    """Load a checkpoint's weights into ``model``; every tool that loads a detector's weights calls this.

    With ``strict=True`` (``tools/test.py``, ``tools/demo.py``, ``export_onnx.py``, ``init_detector``, ``--resume``)
    the checkpoint's weights must be the model's, name for name and shape for shape; otherwise nothing is loaded
    and one :class:`CheckpointError` line names the checkpoint, the config it was trained with (read from its
    ``meta['config']``, or mmengine's ``meta['cfg']``, without running it), the config given, and how many weights
    are missing, unused or of another shape, with the first few of each.

    With ``strict=False`` (``load_from``, as mmengine's ``load_checkpoint``) the weights whose name and shape match
    are loaded and the rest of the model keeps its initialisation: weights of another shape (a head trained for
    another class count) are skipped with one warning line naming them, and weights missing from the checkpoint or
    unused by the model with another one; a checkpoint of which no weight fits is an error.

    Args:
        model: the (unwrapped) detector.
        checkpoint: a path, or an already loaded checkpoint dict. A bare state dict (no ``state_dict`` key)
            is accepted too; a ``module.`` prefix left by ``DistributedDataParallel`` is removed.
        strict: all weights must match (an error otherwise), or only the matching ones are loaded.
        config: the config the model was built from, for messages: a :class:`mmengine.config.Config` (its file
            name and model types are named), a dict, or config text.
        name: the checkpoint's path for messages when ``checkpoint`` is a dict.

    Returns:
        The checkpoint's ``meta`` dict (empty when it has none).

    Raises:
        FileNotFoundError, CheckpointError: an unreadable checkpoint (see :func:`read_torch_file`); one without a
            state dict of tensors; with ``strict``, weights that do not fit; without, no weight that fits.
    """
    if isinstance(checkpoint, dict):
        ckpt, where = checkpoint, os.fspath(name) if name is not None else 'the checkpoint'
    else:
        ckpt, where = load_checkpoint(checkpoint, map_location), os.fspath(checkpoint)
    state = ckpt.get('state_dict', ckpt)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f'checkpoint {where} has no "state_dict" of tensors (keys: {sorted(ckpt)[:10]})')
    if state and all(k.startswith('module.') for k in state):
        state = OrderedDict((k[len('module.'):], v) for k, v in state.items())
    meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}' for k in mismatched]
    if strict:
        if missing or unexpected or mismatched:
            parts = [f'missing from the checkpoint: {len(missing)} of {len(own)} model weights ({_first(missing)})'
                     if missing else '',
                     f'not in the model: {len(unexpected)} of {len(state)} checkpoint weights ({_first(unexpected)})'
                     if unexpected else '',
                     f'shape differs: {_count(mismatched)} ({", ".join(shapes[:3])}{", ..." if shapes[3:] else ""})'
                     if mismatched else '']
            raise CheckpointError(
                f'checkpoint {where} does not fit the model. Trained with: {_trained_with(meta)}. Config given: '
                f'{describe_config(config)}; {"; ".join(p for p in parts if p)}. Give the config the '
                'checkpoint was trained with (or use load_from to start training from its matching weights)')
        model.load_state_dict(state, strict=True)
        return dict(meta)
    skipped = set(mismatched)
    fitting = {k: v for k, v in state.items() if k in own and k not in skipped}
    if not fitting:
        raise CheckpointError(
            f'checkpoint {where} holds none of the model\'s {len(own)} weights with their shape ({len(state)} '
            f'weights, e.g. {_first(list(state), 3)}; the model\'s: {_first(list(own), 3)}). Trained with: '
            f'{_trained_with(meta)}')
    log = logging.getLogger('detkit')
    if mismatched:
        log.warning(f'loading {where}: skipped {_count(mismatched)} whose shape differs from the model\'s (another '
                    f'class count?), which keep their initialisation: {", ".join(shapes[:8])}'
                    f'{", ..." if shapes[8:] else ""}')
    if missing or unexpected:
        parts = [f'missing from the checkpoint, keeping their initialisation: {len(missing)} ({_first(missing)})'
                 if missing else '',
                 f'unused (not in the model): {len(unexpected)} ({_first(unexpected)})' if unexpected else '']
        log.warning(f'loaded {where} partially: {len(fitting)} of {len(own)} model weights; '
                    f'{"; ".join(p for p in parts if p)}')
    model.load_state_dict(fitting, strict=False)
    return dict(meta)


def _first(keys: list[str], n: int = 5) -> str:
    """``"['a', 'b', ...]"``: the first ``n`` keys."""
    return f'{keys[:n]}'[:-1] + (', ...]' if len(keys) > n else ']')


def _count(keys: list[str]) -> str:
    return f'{len(keys)} weight{"" if len(keys) == 1 else "s"}'


def _trained_with(meta: dict[str, Any]) -> str:
    """What a checkpoint's ``meta`` says of the config it was trained with."""
    text = meta.get('config') or meta.get('cfg')  # detkit's trainer; mmengine's runner
    if not isinstance(text, str) or not text.strip():
        return 'unknown (the checkpoint stores no config)'
    return describe_config(text)


_MODEL_PARTS = ('backbone', 'neck', 'bbox_head')


def describe_config(config: Any) -> str:
    """A config in a few words for messages: its file, ``work_dir`` and model types.

    ``'configs/ssd/ssd300_voc0712.py, work_dir work_dirs/ssd300, model SingleStageDetector(backbone=SSDVGG,
    neck=SSDNeck, bbox_head=SSDHead)'``. ``config`` is a :class:`mmengine.config.Config`, a dict, or config text (as
    checkpoints store it, parsed without being run); ``None`` gives ``'unknown'``.
    """
    if config is None or (isinstance(config, str) and not config.strip()):
        return 'unknown'
    if isinstance(config, str):
        filename, fields = None, _literal_fields(config, ('work_dir', 'model'))
        if fields is None:
            return f'unknown ({len(config.splitlines())} lines that are not Python config text)'
    else:
        filename = getattr(config, 'filename', None)
        fields = {k: config.get(k) for k in ('work_dir', 'model')} if hasattr(config, 'get') else {}
    details = [filename] if filename else []
    if isinstance(fields.get('work_dir'), str):
        details.append(f'work_dir {fields["work_dir"]}')
    model = fields.get('model')
    if hasattr(model, 'get'):
        parts = [f'{p}={model[p].get("type")}' for p in _MODEL_PARTS if hasattr(model.get(p), 'get')]
        details.append(f'model {model.get("type")}' + (f'({", ".join(parts)})' if parts else ''))
    else:
        details.append('no model')
    return ', '.join(details)


def _literal_fields(text: str, names: tuple[str, ...]) -> dict[str, Any] | None:
    """The top-level assignments ``names`` of Python config text whose values are literals and ``dict(...)`` calls,
    read with :mod:`ast` (nothing in the text runs); ``None`` when the text is not Python."""
    import ast

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict':
            return {kw.arg: value(kw.value) for kw in node.keywords if kw.arg is not None}
        if isinstance(node, ast.Dict):
            return {value(k): value(v) for k, v in zip(node.keys, node.values) if k is not None}
        try:
            return ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, RecursionError):
            return None

    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return None
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in names:
            out[node.targets[0].id] = value(node.value)
    return out
