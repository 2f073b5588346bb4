"""Learning-rate schedules: linear warmup, multi-step decay and cosine annealing, composed by multiplication.

Config (the ``param_scheduler`` key, a dict or a list of dicts)::

    param_scheduler = [
        dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),       # warmup, iterations
        dict(type='MultiStepLR', by_epoch=True, begin=0, end=24, milestones=[16, 22], gamma=0.1),  # epochs
    ]

Each schedule is a *closed-form* factor of the iteration, and the lr of every optimizer group at iteration ``i``
(0-based, counted over the whole run) is::

    lr(i) = base_lr * prod(schedule.factor(i) for schedule in param_scheduler)

so the value does not depend on how many times ``step`` was called before: resuming from a checkpoint sets exactly
the lr the uninterrupted run had. The trainer sets the lr *before* iteration ``i`` runs.

Units: ``begin``, ``end``, ``milestones`` and ``T_max`` are iterations when ``by_epoch=False`` and epochs when
``by_epoch=True``. An epoch-based schedule changes the lr at epoch boundaries (epoch ``e`` = iterations
``[e * iters_per_epoch, (e + 1) * iters_per_epoch)``), unless ``convert_to_iter_based=True``, which follows the
same curve smoothly per iteration using the fractional epoch ``i / iters_per_epoch`` (useful for cosine).

Outside ``[begin, end)`` a schedule holds: before ``begin`` its factor is 1, from ``end`` on it keeps its value at
``end`` (a warmup reaches ``end_factor`` exactly at ``end``; mmengine stops one step short of it).
"""
# Kept by hand: mmengine's schedulers give another lr sequence (LinearLR ends a step early, chained updates drift).
from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from detkit.registry import PARAM_SCHEDULERS

__all__ = ['LRSchedule', 'LinearLR', 'ConstantLR', 'MultiStepLR', 'StepLR', 'CosineAnnealingLR', 'LRScheduler',
           'build_schedules', 'build_lr_scheduler']


class LRSchedule:
    """Base class: a multiplicative lr factor as a function of the training progress.

    Args:
        begin: first step (iteration or epoch) at which the schedule acts.
        end: step at which it stops changing; ``None`` means never.
        by_epoch: whether ``begin``/``end`` and the schedule's own steps are epochs (else iterations).
        convert_to_iter_based: for epoch schedules, evaluate at fractional epochs (smooth per iteration).
    """

    def __init__(self, *, begin: int = 0, end: int | None = None, by_epoch: bool = True,
                 convert_to_iter_based: bool = False) -> None:
        if end is not None and end <= begin:
            raise ValueError(f'{type(self).__name__}: end ({end}) must be greater than begin ({begin})')
        self.begin = begin
        self.end = end
        self.by_epoch = by_epoch
        self.convert_to_iter_based = convert_to_iter_based

    def progress(self, iteration: int, iters_per_epoch: int) -> float:
        """Steps since ``begin`` (in this schedule's unit), clamped to ``[.., end - begin]``; negative before begin."""
        if self.by_epoch:
            step = iteration / iters_per_epoch if self.convert_to_iter_based else iteration // iters_per_epoch
        else:
            step = iteration
        if self.end is not None:
            step = min(step, self.end)
        return step - self.begin

    def factor(self, iteration: int, iters_per_epoch: int, base_lr: float) -> float:
        """The lr multiplier at global iteration ``iteration`` (0-based) for a group whose base lr is ``base_lr``."""
        t = self.progress(iteration, iters_per_epoch)
        return 1.0 if t < 0 else self._factor(t, base_lr)

    def _factor(self, t: float, base_lr: float) -> float:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The schedule's hyper-parameters (plain values, for checkpoints)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        args = ', '.join(f'{k}={v!r}' for k, v in vars(self).items())
        return f'{type(self).__name__}({args})'


@PARAM_SCHEDULERS.register_module()
class LinearLR(LRSchedule):
    """Linear change of the factor from ``start_factor`` at ``begin`` to ``end_factor`` at ``end`` (warmup).

    ``factor = start + (end_factor - start) * t / (end - begin)`` with ``t`` the steps since ``begin``.
    """

    def __init__(self, start_factor: float = 1.0 / 3, end_factor: float = 1.0, *, begin: int = 0, end: int = 500,
                 by_epoch: bool = False, convert_to_iter_based: bool = False) -> None:
        super().__init__(begin=begin, end=end, by_epoch=by_epoch, convert_to_iter_based=convert_to_iter_based)
        if end is None:
            raise ValueError('LinearLR needs an end')
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise ValueError(f'LinearLR factors must be in (0, 1], got start_factor={start_factor}, '
                             f'end_factor={end_factor}')
        self.start_factor = start_factor
        self.end_factor = end_factor

    def _factor(self, t: float, base_lr: float) -> float:
        return self.start_factor + (self.end_factor - self.start_factor) * t / (self.end - self.begin)


@PARAM_SCHEDULERS.register_module()
class ConstantLR(LRSchedule):
    """A constant ``factor`` from ``begin`` until ``end``, then 1."""

    def __init__(self, factor: float = 1.0 / 3, *, begin: int = 0, end: int = 5, by_epoch: bool = True,
                 convert_to_iter_based: bool = False) -> None:
        super().__init__(begin=begin, end=end, by_epoch=by_epoch, convert_to_iter_based=convert_to_iter_based)
        self.factor_value = factor

    def _factor(self, t: float, base_lr: float) -> float:
        return 1.0 if t >= self.end - self.begin else self.factor_value


@PARAM_SCHEDULERS.register_module()
class MultiStepLR(LRSchedule):
    """Multiply by ``gamma`` at each milestone: ``factor = gamma ** (number of milestones <= t)``.

    Milestones count from ``begin``, like mmengine's.
    """

    def __init__(self, milestones: Sequence[int], gamma: float = 0.1, *, begin: int = 0, end: int | None = None,
                 by_epoch: bool = True, convert_to_iter_based: bool = False) -> None:
        super().__init__(begin=begin, end=end, by_epoch=by_epoch, convert_to_iter_based=convert_to_iter_based)
        if list(milestones) != sorted(milestones):
            raise ValueError(f'MultiStepLR milestones must be increasing, got {list(milestones)}')
        self.milestones = list(milestones)
        self.gamma = gamma

    def _factor(self, t: float, base_lr: float) -> float:
        return self.gamma ** bisect.bisect_right(self.milestones, t)


@PARAM_SCHEDULERS.register_module()
class StepLR(LRSchedule):
    """Multiply by ``gamma`` every ``step_size`` steps: ``factor = gamma ** floor(t / step_size)``."""

    def __init__(self, step_size: int, gamma: float = 0.1, *, begin: int = 0, end: int | None = None,
                 by_epoch: bool = True, convert_to_iter_based: bool = False) -> None:
        super().__init__(begin=begin, end=end, by_epoch=by_epoch, convert_to_iter_based=convert_to_iter_based)
        self.step_size = step_size
        self.gamma = gamma

    def _factor(self, t: float, base_lr: float) -> float:
        return self.gamma ** math.floor(t / self.step_size)


@PARAM_SCHEDULERS.register_module()
class CosineAnnealingLR(LRSchedule):
    """Half a cosine from the base lr down to ``eta_min`` over ``T_max`` steps (default ``end - begin``).

    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2``; ``eta_min`` is an absolute lr,
    ``eta_min_ratio`` the same as a fraction of the base lr (give one of them).
    """

    def __init__(self, T_max: int | None = None, eta_min: float | None = None, *, eta_min_ratio: float | None = None,
                 begin: int = 0, end: int | None = None, by_epoch: bool = True,
                 convert_to_iter_based: bool = False) -> None:
        super().__init__(begin=begin, end=end, by_epoch=by_epoch, convert_to_iter_based=convert_to_iter_based)
        if T_max is None:
            if end is None:
                raise ValueError('CosineAnnealingLR needs T_max or end')
            T_max = end - begin
        if eta_min is not None and eta_min_ratio is not None:
            raise ValueError('CosineAnnealingLR: give eta_min or eta_min_ratio, not both')
        self.T_max = T_max
        self.eta_min = eta_min
        self.eta_min_ratio = eta_min_ratio

    def _factor(self, t: float, base_lr: float) -> float:
        if self.eta_min_ratio is not None:
            floor = self.eta_min_ratio
        else:
            floor = (self.eta_min or 0.0) / base_lr if base_lr > 0 else 0.0
        t = min(t, self.T_max)
        return floor + (1.0 - floor) * (1.0 + math.cos(math.pi * t / self.T_max)) / 2.0


class LRScheduler:
    """Applies the composed schedules to an optimizer's param groups.

    Args:
        optimizer: its groups' current ``lr`` values are taken as the base lrs.
        schedules: the built :class:`LRSchedule` objects (may be empty: constant lr).
        iters_per_epoch: training iterations per epoch (length of the train loader).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedules: Sequence[LRSchedule],
                 iters_per_epoch: int) -> None:
        if iters_per_epoch <= 0:
            raise ValueError(f'iters_per_epoch must be positive, got {iters_per_epoch} (is the train set empty?)')
        self.optimizer = optimizer
        self.schedules = list(schedules)
        self.iters_per_epoch = iters_per_epoch
        self.base_lrs = [float(g['lr']) for g in optimizer.param_groups]
        self.last_iter = -1

    def lrs_at(self, iteration: int) -> list[float]:
        """The lr of every param group at global iteration ``iteration`` (0-based)."""
        lrs = []
        for base in self.base_lrs:
            f = 1.0
            for s in self.schedules:
                f *= s.factor(iteration, self.iters_per_epoch, base)
            lrs.append(base * f)
        return lrs

    def step(self, iteration: int) -> None:
        """Set the lrs for iteration ``iteration`` (call before running it)."""
        for group, lr in zip(self.optimizer.param_groups, self.lrs_at(iteration)):
            group['lr'] = lr
        self.last_iter = iteration

    def state_dict(self) -> dict[str, Any]:
        return {'base_lrs': list(self.base_lrs), 'last_iter': self.last_iter, 'iters_per_epoch': self.iters_per_epoch,
                'schedules': [{'type': type(s).__name__, **s.state_dict()} for s in self.schedules]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if len(state['base_lrs']) != len(self.base_lrs):
            raise ValueError(f'scheduler state has {len(state["base_lrs"])} param groups, the optimizer has '
                             f'{len(self.base_lrs)}: the checkpoint is from a different optimizer config')
        saved_types = [s['type'] for s in state['schedules']]
        if saved_types != [type(s).__name__ for s in self.schedules]:
            raise ValueError(f'scheduler state holds {saved_types}, the config builds '
                             f'{[type(s).__name__ for s in self.schedules]}')
        self.base_lrs = [float(x) for x in state['base_lrs']]
        self.last_iter = int(state['last_iter'])
        for s, st in zip(self.schedules, state['schedules']):
            s.load_state_dict({k: v for k, v in st.items() if k != 'type'})


def build_schedules(param_scheduler_cfg: Any) -> list[LRSchedule]:
    """Build ``param_scheduler`` (a dict, a list of dicts or ``None``) from ``PARAM_SCHEDULERS``."""
    if param_scheduler_cfg is None:
        cfgs = []
    elif isinstance(param_scheduler_cfg, Mapping):
        cfgs = [param_scheduler_cfg]
    else:
        cfgs = list(param_scheduler_cfg)
    schedules = [PARAM_SCHEDULERS.build(c) for c in cfgs]
    for c, s in zip(cfgs, schedules):
        if not isinstance(s, LRSchedule):
            raise TypeError(f'param_scheduler {c.get("type")!r} built a {type(s).__name__}, not an LRSchedule')
    return schedules


def build_lr_scheduler(optimizer: torch.optim.Optimizer, param_scheduler_cfg: Any,
                       iters_per_epoch: int) -> LRScheduler:
    """The :class:`LRScheduler` of ``param_scheduler`` (see :func:`build_schedules`) over ``optimizer``."""
    return LRScheduler(optimizer, build_schedules(param_scheduler_cfg), iters_per_epoch)
