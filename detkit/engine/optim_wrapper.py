"""One optimisation step: mixed-precision autocast, loss scaling, gradient clipping, optimizer step.

``optim_wrapper.type`` picks full precision (``'OptimWrapper'``, the default) or mixed precision
(``'AmpOptimWrapper'``, also what ``tools/train.py --amp`` selects):

- CUDA: float16 autocast with a dynamic ``GradScaler`` (float16 gradients underflow without it), or bfloat16
  with ``dtype='bfloat16'`` (no scaler needed).
- CPU: bfloat16 autocast; float16 autocast is not offered on CPU and bfloat16's range needs no scaler. On a CPU
  with native bfloat16 (AVX512-BF16 or AMX) it is faster than float32; elsewhere bfloat16 is emulated and slower
  than float32, so ``native_bf16_only=True`` falls back to float32 there.
"""
# Kept by hand: mmengine's AmpOptimWrapper refuses the CPU (it asserts a GPU, NPU, MLU or MUSA device).
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from mmengine.logging import print_log
from torch import nn

__all__ = ['OptimWrapper', 'build_optim_wrapper', 'cpu_has_native_bf16']

_DTYPES = {'float16': torch.float16, 'fp16': torch.float16, 'half': torch.float16,
           'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16}


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX), not by emulation."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class OptimWrapper:
    """Owns the optimizer and performs ``zero_grad -> backward -> (unscale, clip) -> step``.

    Args:
        optimizer: the built optimizer.
        device_type: ``'cpu'`` or ``'cuda'`` (where the model runs).
        amp: run the forward pass under autocast.
        dtype: autocast dtype; ``None`` means float16 on CUDA, bfloat16 on CPU.
        clip_grad: ``dict(max_norm=..., norm_type=2)`` to clip the global gradient norm, or ``None``.
        native_bf16_only: with ``amp`` on a CPU, run in float32 (and say so once) when the CPU has no native
            bfloat16 (oneDNN's check), where emulated bfloat16 would be slower than float32.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, device_type: str = 'cpu', amp: bool = False,
                 dtype: str | torch.dtype | None = None, clip_grad: Mapping[str, Any] | None = None,
                 native_bf16_only: bool = False) -> None:
        self.optimizer = optimizer
        self.device_type = device_type
        if isinstance(dtype, str):
            if dtype not in _DTYPES:
                raise ValueError(f'optim_wrapper.dtype must be one of {sorted(_DTYPES)}, got {dtype!r}')
            dtype = _DTYPES[dtype]
        if dtype is None:
            dtype = torch.float16 if device_type == 'cuda' else torch.bfloat16
        if amp and device_type == 'cpu' and dtype != torch.bfloat16:
            raise ValueError('mixed precision on CPU uses bfloat16; set optim_wrapper.dtype="bfloat16" or run on CUDA')
        if amp and device_type == 'cpu' and native_bf16_only and not cpu_has_native_bf16():
            print_log('optim_wrapper: this CPU has no native bfloat16 (AVX512-BF16/AMX); training in float32 '
                      '(native_bf16_only=True)', logger='current', level=logging.WARNING)
            amp = False
        self.amp = amp
        self.dtype = dtype
        self.clip_grad = dict(clip_grad) if clip_grad else None
        # float16 gradients underflow to zero without loss scaling; bfloat16 has float32's range
        self.scaler = torch.amp.GradScaler('cuda') if amp and dtype == torch.float16 else None

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Context for the forward pass and the loss (a no-op without AMP)."""
        if not self.amp:
            yield
            return
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            yield

    def _params(self) -> list[nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g['params'] if p.grad is not None]

    def update(self, loss: torch.Tensor) -> float | None:
        """Back-propagate ``loss`` and step the optimizer.

        Returns:
            The gradient norm before clipping when ``clip_grad`` is set, else ``None``.
        """
        self.optimizer.zero_grad(set_to_none=True)
        grad_norm = None
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.clip_grad:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
                grad_norm = float(nn.utils.clip_grad_norm_(self._params(), **self.clip_grad))
            self.scaler.step(self.optimizer)  # skips the step when the scaled gradients overflowed
            self.scaler.update()
        else:
            loss.backward()
            if self.clip_grad:
                grad_norm = float(nn.utils.clip_grad_norm_(self._params(), **self.clip_grad))
            self.optimizer.step()
        return grad_norm

    def state_dict(self) -> dict[str, Any]:
        return {'optimizer': self.optimizer.state_dict(),
                'grad_scaler': self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state['optimizer'])
        if self.scaler is not None and state.get('grad_scaler'):
            self.scaler.load_state_dict(state['grad_scaler'])


def build_optim_wrapper(optimizer: torch.optim.Optimizer, optim_wrapper_cfg: Mapping[str, Any],
                        device_type: str) -> OptimWrapper:
    """Build the wrapper described by the config's ``optim_wrapper`` around an already built optimizer."""
    kind = optim_wrapper_cfg.get('type', 'OptimWrapper')
    if kind not in ('OptimWrapper', 'AmpOptimWrapper'):
        raise KeyError(f"optim_wrapper.type must be 'OptimWrapper' or 'AmpOptimWrapper', got {kind!r}")
    return OptimWrapper(optimizer, device_type=device_type, amp=kind == 'AmpOptimWrapper',
                        dtype=optim_wrapper_cfg.get('dtype'), clip_grad=optim_wrapper_cfg.get('clip_grad'),
                        native_bf16_only=bool(optim_wrapper_cfg.get('native_bf16_only', False)))
