"""Optimizers from config: every ``torch.optim`` optimizer registered in ``OPTIMIZERS``, optional per-parameter
weight-decay / lr multipliers (``paramwise_cfg``), and linear lr scaling by the total batch size.

Config (the ``optim_wrapper`` key)::

    optim_wrapper = dict(
        type='OptimWrapper',                 # or 'AmpOptimWrapper' (mixed precision, see optim_wrapper.py)
        optimizer=dict(type='SGD', lr=2e-3, momentum=0.9, weight_decay=5e-4),
        clip_grad=None,                      # or dict(max_norm=35, norm_type=2)
        paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from detkit.registry import OPTIMIZERS

__all__ = ['build_optimizer', 'make_param_groups', 'scale_lr_by_batch_size', 'NORM_LAYERS']

# torch.optim.SGD, Adam, AdamW, ... under their own names
for _name, _cls in inspect.getmembers(torch.optim, inspect.isclass):
    if issubclass(_cls, torch.optim.Optimizer) and _cls is not torch.optim.Optimizer:
        OPTIMIZERS.register_module(name=_name, module=_cls)

#: layers whose parameters ``norm_decay_mult`` applies to
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm,
               nn.LocalResponseNorm)


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A plain ``dict`` copy of a config dict (mmengine ``ConfigDict`` would wrap the parameter lists)."""
    return cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)


def make_param_groups(model: nn.Module, lr: float, weight_decay: float, *, norm_decay_mult: float = 1.0,
                      bias_decay_mult: float = 1.0, bias_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """Split the trainable parameters into optimizer groups by their weight decay and lr.

    Weight decay on the scale and shift of normalisation layers and on biases pulls them towards zero
    without regularising anything useful, so detectors usually turn it off (``norm_decay_mult=0``,
    ``bias_decay_mult=0``). A normalisation layer's bias counts as a norm parameter.

    Returns:
        One group per distinct ``(lr, weight_decay)``, each ``dict(params=[...], lr=..., weight_decay=...)``;
        groups keep the model's parameter order so that checkpoints are stable.
    """
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, NORM_LAYERS)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:  # shared parameters go in once
                continue
            seen.add(id(param))
            decay_mult, lr_mult = 1.0, 1.0
            if is_norm:
                decay_mult = norm_decay_mult
            elif name == 'bias':
                decay_mult, lr_mult = bias_decay_mult, bias_lr_mult
            groups.setdefault((lr * lr_mult, weight_decay * decay_mult), []).append(param)
    return [dict(params=params, lr=g_lr, weight_decay=g_wd) for (g_lr, g_wd), params in groups.items()]


def build_optimizer(model: nn.Module, optim_wrapper_cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Build ``optim_wrapper_cfg['optimizer']`` from ``OPTIMIZERS`` over ``model``'s trainable parameters.

    Args:
        model: the detector (unwrapped; DDP is applied after the optimizer exists).
        optim_wrapper_cfg: the config's ``optim_wrapper`` dict (``optimizer`` and optional ``paramwise_cfg``
            with ``norm_decay_mult``, ``bias_decay_mult``, ``bias_lr_mult``).
    """
    if 'optimizer' not in optim_wrapper_cfg:
        raise KeyError(f'optim_wrapper has no "optimizer" entry (keys: {sorted(optim_wrapper_cfg)})')
    opt_cfg = _plain(optim_wrapper_cfg['optimizer'])
    paramwise = optim_wrapper_cfg.get('paramwise_cfg')
    if paramwise:
        paramwise = _plain(paramwise)
        allowed = {'norm_decay_mult', 'bias_decay_mult', 'bias_lr_mult'}
        unknown = set(paramwise) - allowed
        if unknown:
            raise KeyError(f'optim_wrapper.paramwise_cfg has unknown keys {sorted(unknown)}; '
                           f'supported: {sorted(allowed)}')
        if 'lr' not in opt_cfg:
            raise KeyError('optim_wrapper.optimizer needs "lr" when paramwise_cfg is set')
        opt_cfg['params'] = make_param_groups(model, opt_cfg['lr'], opt_cfg.get('weight_decay', 0.0), **paramwise)
    else:
        opt_cfg['params'] = [p for p in model.parameters() if p.requires_grad]
    return OPTIMIZERS.build(opt_cfg)


def scale_lr_by_batch_size(optim_wrapper_cfg: Mapping[str, Any], total_batch_size: int,
                           base_batch_size: int) -> float:
    """Linear scaling rule: multiply ``optimizer.lr`` in place by ``total_batch_size / base_batch_size``.

    The config's lr was tuned for ``base_batch_size`` images per step (``auto_scale_lr.base_batch_size``);
    training with a different total batch (GPUs x batch per GPU) with the same lr is a common cause of NaN losses
    or slow training.

    Returns:
        The new lr.
    """
    if base_batch_size <= 0:
        raise ValueError(f'auto_scale_lr.base_batch_size must be positive, got {base_batch_size}')
    opt = optim_wrapper_cfg['optimizer']
    opt['lr'] = opt['lr'] * total_batch_size / base_batch_size
    return opt['lr']
