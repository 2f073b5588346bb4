"""Learning-rate schedules: values at chosen iterations against hand computation and against mmengine's
schedulers, composition, state."""
import io
import math

import mmengine.optim.scheduler as mm_sched
import pytest
import torch
from torch import nn

from detkit.engine.schedulers import (CosineAnnealingLR, LinearLR, LRScheduler, MultiStepLR, StepLR,
                                      build_lr_scheduler)

BASE = 0.02


def _optimizer(lr=BASE, groups=1):
    params = [nn.Parameter(torch.zeros(1)) for _ in range(groups)]
    return torch.optim.SGD([{'params': [p], 'lr': lr * (i + 1)} for i, p in enumerate(params)], lr=lr, momentum=0.9)


def _warmup_multistep(iters_per_epoch):
    cfg = [dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
           dict(type='MultiStepLR', by_epoch=True, begin=0, end=24, milestones=[16, 22], gamma=0.1)]
    return build_lr_scheduler(_optimizer(), cfg, iters_per_epoch)


@pytest.mark.parametrize('iteration, expected', [
    (0, BASE * 0.001),                                  # the first iteration runs at start_factor
    (1, BASE * (0.001 + 0.999 * 1 / 500)),
    (250, BASE * (0.001 + 0.999 * 250 / 500)),
    (499, BASE * (0.001 + 0.999 * 499 / 500)),
    (500, BASE),                                        # warmup over: exactly the base lr
    (1599, BASE),                                       # last iteration of epoch 16 (index 15)
    (1600, BASE * 0.1),                                 # first iteration of the 17th epoch: first milestone
    (2199, BASE * 0.1),
    (2200, BASE * 0.01),
    (2399, BASE * 0.01),
])
def test_warmup_then_multistep_lr_at_iterations(iteration, expected):
    sched = _warmup_multistep(iters_per_epoch=100)
    sched.step(iteration)
    assert sched.optimizer.param_groups[0]['lr'] == pytest.approx(expected, rel=1e-12)


def test_warmup_and_milestone_overlap_multiply():
    # 20 iterations per epoch: iteration 330 is in epoch 16 (after the first milestone) and still warming up
    sched = _warmup_multistep(iters_per_epoch=20)
    assert sched.lrs_at(330)[0] == pytest.approx(BASE * (0.001 + 0.999 * 330 / 500) * 0.1, rel=1e-12)


def test_every_param_group_scales_its_own_base_lr():
    opt = _optimizer(groups=2)
    sched = build_lr_scheduler(opt, dict(type='MultiStepLR', milestones=[1], gamma=0.5), iters_per_epoch=10)
    sched.step(10)
    assert [g['lr'] for g in opt.param_groups] == pytest.approx([BASE * 0.5, 2 * BASE * 0.5])


def test_cosine_by_epoch_steps_per_epoch_unless_converted():
    T, ipe, eta = 10, 4, 0.001
    stepped = LRScheduler(_optimizer(), [CosineAnnealingLR(T_max=T, eta_min=eta, by_epoch=True)], ipe)
    smooth = LRScheduler(_optimizer(), [CosineAnnealingLR(T_max=T, eta_min=eta, by_epoch=True,
                                                          convert_to_iter_based=True)], ipe)
    cos = lambda t: eta + (BASE - eta) * (1 + math.cos(math.pi * t / T)) / 2  # noqa: E731
    # iteration 10 = epoch 2.5: the per-epoch schedule holds epoch 2's value, the smooth one follows the curve
    assert stepped.lrs_at(10)[0] == pytest.approx(cos(2))
    assert stepped.lrs_at(11)[0] == stepped.lrs_at(8)[0]
    assert smooth.lrs_at(10)[0] == pytest.approx(cos(2.5))
    assert smooth.lrs_at(0)[0] == pytest.approx(BASE)
    assert smooth.lrs_at(T * ipe)[0] == pytest.approx(eta)
    assert smooth.lrs_at(3 * T * ipe)[0] == pytest.approx(eta)  # holds eta_min after T_max


def test_cosine_eta_min_ratio_and_begin_offset():
    s = LRScheduler(_optimizer(), [CosineAnnealingLR(begin=2, end=12, eta_min_ratio=0.1, by_epoch=True)], 1)
    assert s.lrs_at(1)[0] == pytest.approx(BASE)        # before begin: untouched
    assert s.lrs_at(7)[0] == pytest.approx(BASE * (0.1 + 0.9 * 0.5))  # half way (t = 5 of T_max = 10)
    assert s.lrs_at(50)[0] == pytest.approx(BASE * 0.1)


def test_step_lr_and_epoch_based_warmup():
    s = LRScheduler(_optimizer(), [LinearLR(start_factor=0.25, by_epoch=True, end=3),
                                   StepLR(step_size=2, gamma=0.5)], iters_per_epoch=5)
    # epoch 0: 0.25, epoch 1: 0.5, epoch 2: 0.75 * 0.5 (step at epoch 2), epoch 4: 1 * 0.25
    assert [s.lrs_at(e * 5 + 3)[0] / BASE for e in (0, 1, 2, 4)] == pytest.approx([0.25, 0.5, 0.375, 0.25])


def test_scheduler_state_round_trips_through_a_weights_only_checkpoint():
    a = _warmup_multistep(iters_per_epoch=100)
    a.base_lrs = [0.005]  # e.g. scaled by --auto-scale-lr in the original run
    a.step(1234)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = _warmup_multistep(iters_per_epoch=100)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert b.base_lrs == [0.005] and b.last_iter == 1234
    assert b.lrs_at(1700) == a.lrs_at(1700)


def test_loading_state_of_other_schedules_is_refused():
    a = _warmup_multistep(iters_per_epoch=10)
    b = build_lr_scheduler(_optimizer(), dict(type='CosineAnnealingLR', T_max=5), 10)
    with pytest.raises(ValueError, match='CosineAnnealingLR'):
        b.load_state_dict(a.state_dict())


def test_bad_configs_name_the_problem():
    with pytest.raises(KeyError, match='MultiStepLR'):
        build_lr_scheduler(_optimizer(), dict(type='MultiStepLr', milestones=[1]), 10)
    with pytest.raises(ValueError, match='increasing'):
        MultiStepLR(milestones=[5, 2])
    with pytest.raises(ValueError, match='end'):
        LinearLR(begin=10, end=5)


# ----------------------------------------------------------------------------- against mmengine's own schedulers
def _mmengine_lrs(make, iters_per_epoch, n):
    """The lr mmengine's schedulers give iterations 0..n-1, stepped as its ParamSchedulerHook steps them: the
    iteration-based ones after every iteration, the epoch-based ones after every epoch."""
    optimizer = _optimizer()
    schedulers = make(optimizer)
    lrs = []
    for i in range(n):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        for s in schedulers:
            if not s.by_epoch:
                s.step()
        if (i + 1) % iters_per_epoch == 0:
            for s in schedulers:
                if s.by_epoch:
                    s.step()
    return lrs


@pytest.mark.parametrize('case', ['multistep', 'step', 'cosine_by_epoch', 'cosine_iter_based'])
def test_equals_mmengine_inside_the_schedule_and_reaches_the_end_value_at_end(case):
    ipe, end = 3, 6  # 3 iterations per epoch, the schedules end after epoch 6 (iteration 18)
    mm, ours = {
        'multistep': (lambda o: [mm_sched.MultiStepLR(o, milestones=[2, 4], gamma=0.1, by_epoch=True, end=end)],
                      [MultiStepLR(milestones=[2, 4], gamma=0.1, end=end)]),
        'step': (lambda o: [mm_sched.StepLR(o, step_size=2, gamma=0.5, by_epoch=True, end=end)],
                 [StepLR(step_size=2, gamma=0.5, end=end)]),
        'cosine_by_epoch': (lambda o: [mm_sched.CosineAnnealingLR(o, T_max=end, eta_min=1e-3, by_epoch=True, end=end)],
                            [CosineAnnealingLR(T_max=end, eta_min=1e-3, end=end)]),
        'cosine_iter_based': (lambda o: [mm_sched.CosineAnnealingLR.build_iter_from_epoch(
            o, T_max=end, eta_min=1e-3, by_epoch=True, begin=0, end=end, epoch_length=ipe)],
            [CosineAnnealingLR(T_max=end, eta_min=1e-3, end=end, convert_to_iter_based=True)]),
    }[case]
    reference = _mmengine_lrs(mm, ipe, 10 * ipe)
    got = LRScheduler(_optimizer(), ours, ipe)
    assert [got.lrs_at(i)[0] for i in range(end * ipe)] == pytest.approx(reference[:end * ipe], rel=1e-12)
    # from `end` on both hold; detkit holds the schedule's value at `end` (cosine: eta_min), mmengine the value of
    # its last step before it, so the cosine schedules part there
    final = {'multistep': BASE * 0.01, 'step': BASE * 0.125, 'cosine_by_epoch': 1e-3, 'cosine_iter_based': 1e-3}[case]
    assert got.lrs_at(end * ipe)[0] == pytest.approx(final, rel=1e-12)
    assert got.lrs_at(10 * ipe)[0] == pytest.approx(final, rel=1e-12)


def test_linear_warmup_ends_one_step_later_than_mmengines():
    """Why detkit keeps its own schedules: mmengine's LinearLR(end=e) reaches end_factor at e - 1, detkit's at e
    (mmengine's LinearLR(end=e + 1) is detkit's LinearLR(end=e)), so mmengine's would change every warmup."""
    ours = LRScheduler(_optimizer(), [LinearLR(start_factor=0.1, begin=0, end=10),
                                      MultiStepLR(milestones=[2, 4], gamma=0.1)], iters_per_epoch=3)
    got = [ours.lrs_at(i)[0] for i in range(20)]
    one_longer = _mmengine_lrs(lambda o: [mm_sched.LinearLR(o, start_factor=0.1, by_epoch=False, begin=0, end=11),
                                          mm_sched.MultiStepLR(o, milestones=[2, 4], gamma=0.1, by_epoch=True)], 3, 20)
    assert got == pytest.approx(one_longer, rel=1e-12)
    same_end = _mmengine_lrs(lambda o: [mm_sched.LinearLR(o, start_factor=0.1, by_epoch=False, begin=0, end=10)], 3, 10)
    warmup = LRScheduler(_optimizer(), [LinearLR(start_factor=0.1, begin=0, end=10)], iters_per_epoch=3)
    assert same_end[9] == pytest.approx(BASE) and warmup.lrs_at(9)[0] == pytest.approx(BASE * 0.91)
    assert warmup.lrs_at(10)[0] == BASE
