"""Optimizers from config: every ``torch.optim`` optimizer registered in ``OPTIMIZERS``, per-parameter weight-decay /
lr multipliers (``paramwise_cfg``, worked out by mmengine's ``DefaultOptimWrapperConstructor``), and linear lr
scaling by the total batch size.

Config (the ``optim_wrapper`` key)::

    optim_wrapper = dict(
        type='OptimWrapper',                 # or 'AmpOptimWrapper' (mixed precision, see optim_wrapper.py)
        optimizer=dict(type='SGD', lr=2e-3, momentum=0.9, weight_decay=5e-4),
        clip_grad=None,                      # or dict(max_norm=35, norm_type=2)
        paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from detkit.registry import OPTIMIZERS

__all__ = ['build_optimizer', 'make_param_groups', 'scale_lr_by_batch_size', 'PARAMWISE_KEYS']

# torch.optim.SGD, Adam, AdamW, ... under their own names
for _name, _cls in inspect.getmembers(torch.optim, inspect.isclass):
    if issubclass(_cls, torch.optim.Optimizer) and _cls is not torch.optim.Optimizer:
        OPTIMIZERS.register_module(name=_name, module=_cls)

#: the ``paramwise_cfg`` keys, read by mmengine's ``DefaultOptimWrapperConstructor``: multipliers of the weight
#: decay of normalisation layers, biases, depth-wise convs and other 1-d parameters, of the lr of biases, and
#: ``custom_keys=dict(name_part=dict(lr_mult=..., decay_mult=...))`` for parameters whose name contains a key
PARAMWISE_KEYS = ('norm_decay_mult', 'bias_decay_mult', 'bias_lr_mult', 'dwconv_decay_mult', 'flat_decay_mult',
                  'custom_keys')


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A plain ``dict`` copy of a config dict (mmengine ``ConfigDict`` would wrap the parameter lists)."""
    return cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)


@contextlib.contextmanager
def _quiet_mmengine() -> Iterator[None]:
    """Silence mmengine's logger: the constructor logs one line per parameter (and warns about frozen ones)."""
    from mmengine.logging import MMLogger  # noqa: PLC0415

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def make_param_groups(model: nn.Module, lr: float, weight_decay: float, **paramwise_cfg: Any) -> list[dict[str, Any]]:
    """Split the trainable parameters into optimizer groups by their lr, weight decay and other options.

    mmengine's ``DefaultOptimWrapperConstructor`` decides each parameter's options from ``paramwise_cfg``
    (:data:`PARAMWISE_KEYS`; e.g. ``norm_decay_mult=0, bias_decay_mult=0``: weight decay on the scale and shift
    of normalisation layers and on biases pulls them towards zero without regularising anything useful). It
    makes one group per parameter; they are merged here into one group per distinct set of options, which keeps
    optimizer checkpoints small and stable and lets the optimizers' multi-tensor (``foreach``) kernels see a
    whole group at once.

    Returns:
        ``dict(params=[...], lr=..., weight_decay=..., [other options])`` per distinct set of options, in the
        model's parameter order; frozen parameters are left out, a shared parameter goes in once.
    """
    from mmengine.optim import DefaultOptimWrapperConstructor  # noqa: PLC0415 (imports torch FSDP: seconds)

    constructor = DefaultOptimWrapperConstructor(
        dict(optimizer=dict(lr=lr, weight_decay=weight_decay)), dict(paramwise_cfg, bypass_duplicate=True))
    per_param: list[dict[str, Any]] = []
    with _quiet_mmengine():
        constructor.add_params(per_param, model)
    groups: dict[tuple, dict[str, Any]] = {}
    for group in per_param:
        options = {'lr': lr, 'weight_decay': weight_decay, **{k: v for k, v in group.items() if k != 'params'}}
        key = tuple(sorted((k, repr(v)) for k, v in options.items()))
        groups.setdefault(key, dict(params=[], **options))['params'].extend(group['params'])
    return list(groups.values())


def build_optimizer(model: nn.Module, optim_wrapper_cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Build ``optim_wrapper_cfg['optimizer']`` from ``OPTIMIZERS`` over ``model``'s trainable parameters.

    Args:
        model: the detector (unwrapped; DDP is applied after the optimizer exists).
        optim_wrapper_cfg: the config's ``optim_wrapper`` dict (``optimizer`` and optional ``paramwise_cfg``
            with the keys of :data:`PARAMWISE_KEYS`).

    Raises:
        KeyError: no ``optimizer`` entry, an unknown ``paramwise_cfg`` key (mmengine would ignore it), or
            ``paramwise_cfg`` without ``optimizer.lr``.
    """
    if 'optimizer' not in optim_wrapper_cfg:
        raise KeyError(f'optim_wrapper has no "optimizer" entry (keys: {sorted(optim_wrapper_cfg)})')
    opt_cfg = _plain(optim_wrapper_cfg['optimizer'])
    paramwise = optim_wrapper_cfg.get('paramwise_cfg')
    if paramwise:
        paramwise = _plain(paramwise)
        unknown = set(paramwise) - set(PARAMWISE_KEYS)
        if unknown:
            raise KeyError(f'optim_wrapper.paramwise_cfg has unknown keys {sorted(unknown)}; '
                           f'supported: {sorted(PARAMWISE_KEYS)}')
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
