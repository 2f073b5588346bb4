"""Loading of the compiled extension ``detkit._C`` and which kernels it holds."""
from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

import torch

__all__ = ['ext_module', 'ext_error', 'has_kernel', 'warn_fallback_once']

_BUILD_HINT = ('build it with `make install` (or `bash compile.sh` for an in-place build); '
               '`python -m detkit.utils.collect_env` shows what was found')
_state: dict = {'loaded': False, 'module': None, 'error': None, 'warned': set()}


def ext_module() -> ModuleType | None:
    """The imported ``detkit._C``, or None when it is not built (or ``DETKIT_DISABLE_EXT=1``)."""
    if not _state['loaded']:
        _state['loaded'] = True
        if os.getenv('DETKIT_DISABLE_EXT', '0') == '1':
            _state['error'] = 'disabled by DETKIT_DISABLE_EXT=1'
        else:
            try:
                _state['module'] = importlib.import_module('detkit._C')
            except ImportError as e:  # not built, or built against another torch
                _state['error'] = f'{type(e).__name__}: {e}'
            else:
                _register_fakes()
    return _state['module']


def _has_op(op: str) -> bool:
    """Whether the loaded ``detkit._C`` declares ``detkit::<op>`` (an in-place build older than the sources may
    lack a newer op: that op then uses the fallback rather than breaking ``import detkit.ops``)."""
    return hasattr(torch.ops.detkit, op)


def _register_fakes() -> None:
    """Shape functions so that torch.export / torch.compile can trace the ops (their output length is data
    dependent, hence a new dynamic size)."""

    def keep_like(dets: torch.Tensor) -> torch.Tensor:
        return dets.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.long)

    torch.library.register_fake('detkit::nms')(lambda dets, scores, iou_threshold: keep_like(dets))
    torch.library.register_fake('detkit::batched_nms')(lambda dets, scores, idxs, iou_threshold: keep_like(dets))

    def dets_keep_like(dets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = torch.library.get_ctx().new_dynamic_size()
        return dets.new_empty((k, 5)), dets.new_empty((k,), dtype=torch.long)

    torch.library.register_fake('detkit::soft_nms')(
        lambda dets, scores, iou_threshold, sigma, min_score, method: dets_keep_like(dets))
    if _has_op('batched_soft_nms'):
        torch.library.register_fake('detkit::batched_soft_nms')(
            lambda dets, scores, idxs, iou_threshold, sigma, min_score, method: dets_keep_like(dets))


def ext_error() -> str | None:
    """Why ``detkit._C`` could not be loaded (None when it loaded)."""
    ext_module()
    return _state['error']


def has_kernel(op: str, device_type: str) -> bool:
    """Whether ``torch.ops.detkit.<op>`` has a compiled kernel for ``device_type`` ('cpu' or 'cuda')."""
    if ext_module() is None:
        return False
    key = {'cpu': 'CPU', 'cuda': 'CUDA'}.get(device_type)
    if key is None or not _has_op(op):
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f'detkit::{op}', key)


def warn_fallback_once(op: str, device_type: str) -> None:
    """One warning per (op, device) that the pure-PyTorch fallback is in use, with how to build the extension."""
    key = (op, device_type)
    if key in _state['warned']:
        return
    _state['warned'].add(key)
    if ext_module() is None:
        why = f'detkit._C is not available ({ext_error()})'
    else:
        why = f'detkit._C was built without a {device_type.upper()} kernel for {op}'
    warnings.warn(f'{why}; detkit.ops.{op} uses the pure-PyTorch fallback (same results, slower): {_BUILD_HINT}',
                  RuntimeWarning, stacklevel=3)
