"""Optimizers from config: registry, no-decay groups, linear lr scaling, gradient clipping, bf16 autocast."""
import pytest
import toy
import torch
from torch import nn

from detkit.engine import Trainer
from detkit.engine.optim_wrapper import OptimWrapper, build_optim_wrapper
from detkit.engine.optimizers import build_optimizer, scale_lr_by_batch_size
from detkit.registry import OPTIMIZERS


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)               # weight + bias
        self.bn = nn.BatchNorm2d(4)                  # norm weight + norm bias
        self.gn = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 2, bias=False)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _wd_of(opt):
    return {id(p): (g['weight_decay'], g['lr']) for g in opt.param_groups for p in g['params']}


def test_torch_optimizers_are_registered():
    assert {'SGD', 'Adam', 'AdamW', 'RMSprop'} <= set(OPTIMIZERS.registered_names())
    opt = build_optimizer(Net(), dict(optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults['betas'] == (0.9, 0.95)


def test_no_decay_on_norm_and_bias():
    net = Net()
    opt = build_optimizer(net, dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4),
                                    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0)))
    wd = _wd_of(opt)
    assert wd[id(net.conv.weight)] == (5e-4, 0.1)
    assert wd[id(net.fc.weight)] == (5e-4, 0.1)
    for p in (net.conv.bias, net.bn.weight, net.bn.bias, net.gn.weight, net.gn.bias):
        assert wd[id(p)] == (0.0, 0.1)
    # every trainable parameter exactly once, frozen ones left out
    listed = [id(p) for g in opt.param_groups for p in g['params']]
    assert sorted(listed) == sorted(id(p) for p in net.parameters() if p.requires_grad)
    assert len(opt.param_groups) == 2


def test_without_paramwise_cfg_every_parameter_decays():
    net = Net()
    opt = build_optimizer(net, dict(optimizer=dict(type='SGD', lr=0.1, weight_decay=1e-4)))
    assert len(opt.param_groups) == 1 and opt.param_groups[0]['weight_decay'] == 1e-4


def test_bias_lr_mult_and_unknown_paramwise_key():
    net = Net()
    opt = build_optimizer(net, dict(optimizer=dict(type='SGD', lr=0.1, weight_decay=1e-4),
                                    paramwise_cfg=dict(bias_lr_mult=2.0, bias_decay_mult=0.0)))
    assert _wd_of(opt)[id(net.conv.bias)] == (0.0, 0.2)
    with pytest.raises(KeyError, match='norm_decay_mul'):
        build_optimizer(net, dict(optimizer=dict(type='SGD', lr=0.1), paramwise_cfg=dict(norm_decay_mul=0)))


def test_linear_lr_scaling_rule():
    cfg = dict(optimizer=dict(type='SGD', lr=0.02))
    assert scale_lr_by_batch_size(cfg, total_batch_size=4, base_batch_size=16) == pytest.approx(0.005)
    assert cfg['optimizer']['lr'] == pytest.approx(0.005)


def test_trainer_auto_scale_lr_uses_the_total_batch(tmp_path):
    cfg = toy.toy_config(str(tmp_path), auto_scale_lr=dict(enable=True, base_batch_size=8))
    trainer = Trainer.from_config(cfg)
    # batch 2 x 1 process against a base of 8: lr 0.02 -> 0.005; the config itself is left alone
    assert trainer.lr_scheduler.base_lrs == pytest.approx([0.005])
    assert cfg.optim_wrapper.optimizer.lr == 0.02
    trainer.log.close()


def test_gradient_clipping_bounds_the_norm():
    net = nn.Linear(4, 1)
    wrapper = OptimWrapper(torch.optim.SGD(net.parameters(), lr=0.0), clip_grad=dict(max_norm=1.0))
    loss = (net(torch.full((8, 4), 100.0)) ** 2).mean()
    norm_before = wrapper.update(loss)
    norm_after = torch.cat([p.grad.flatten() for p in net.parameters()]).norm()
    assert norm_before > 10 and norm_after == pytest.approx(1.0, rel=1e-4)


def test_amp_on_cpu_is_bfloat16_without_a_scaler():
    net = nn.Linear(4, 4)
    wrapper = build_optim_wrapper(torch.optim.SGD(net.parameters(), lr=0.1),
                                  dict(type='AmpOptimWrapper', optimizer=dict(type='SGD', lr=0.1)), 'cpu')
    assert wrapper.amp and wrapper.dtype == torch.bfloat16 and wrapper.scaler is None
    with wrapper.autocast():
        assert net(torch.randn(2, 4)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match='bfloat16'):
        OptimWrapper(torch.optim.SGD(net.parameters(), lr=0.1), amp=True, dtype='float16', device_type='cpu')
    with pytest.raises(KeyError, match='AmpOptimWrapper'):
        build_optim_wrapper(torch.optim.SGD(net.parameters(), lr=0.1), dict(type='Amp'), 'cpu')


@pytest.mark.parametrize('native', [True, False])
def test_native_bf16_only_falls_back_to_float32_where_bfloat16_is_emulated(monkeypatch, native):
    from detkit.engine import optim_wrapper as ow
    monkeypatch.setattr(ow, 'cpu_has_native_bf16', lambda: native)
    net = nn.Linear(4, 4)
    cfg = dict(type='AmpOptimWrapper', dtype='bfloat16', native_bf16_only=True, optimizer=dict(type='SGD', lr=0.1))
    wrapper = build_optim_wrapper(torch.optim.SGD(net.parameters(), lr=0.1), cfg, 'cpu')
    assert wrapper.amp is native
    with wrapper.autocast():
        assert net(torch.randn(2, 4)).dtype == (torch.bfloat16 if native else torch.float32)
    # the check is for CPUs: CUDA autocast is kept whatever the host CPU is, and so is AMP without the option
    assert build_optim_wrapper(torch.optim.SGD(net.parameters(), lr=0.1), cfg, 'cuda').amp
    cfg.pop('native_bf16_only')
    assert build_optim_wrapper(torch.optim.SGD(net.parameters(), lr=0.1), cfg, 'cpu').amp


class Mixed(nn.Module):
    """Norm layers, a depth-wise conv, a 1-d parameter outside norms, a frozen part and a shared parameter."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, groups=8),
                                      nn.LayerNorm(8))
        self.head = nn.Linear(8, 4)
        self.scale = nn.Parameter(torch.ones(4))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.tied = nn.Linear(4, 4, bias=False)
        self.tied_again = nn.Linear(4, 4, bias=False)
        self.tied_again.weight = self.tied.weight


PARAMWISE = [dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
             dict(bias_lr_mult=2.0, dwconv_decay_mult=0.5, flat_decay_mult=0.25),
             dict(custom_keys={'head': dict(lr_mult=0.1, decay_mult=0.0), 'backbone.0': dict(lr_mult=0.5)},
                  norm_decay_mult=0.0)]


@pytest.mark.parametrize('paramwise', PARAMWISE)
def test_param_groups_give_every_parameter_mmengines_options(paramwise):
    """The options of each parameter are those of mmengine's DefaultOptimWrapperConstructor; the groups merge
    parameters with the same options, in the model's order."""
    from mmengine.optim import DefaultOptimWrapperConstructor

    net = Mixed()
    ours = build_optimizer(net, dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-3),
                                     paramwise_cfg=paramwise))
    reference = DefaultOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-3)),
        dict(paramwise, bypass_duplicate=True))(net).optimizer
    options = lambda g: {k: v for k, v in g.items() if k not in ('params', 'initial_lr')}  # noqa: E731
    expected = {id(p): options(g) for g in reference.param_groups for p in g['params']}
    got = {id(p): options(g) for g in ours.param_groups for p in g['params']}
    assert got == expected
    # one group per distinct set of options; trainable parameters once each, in model order, frozen ones left out
    assert len(ours.param_groups) == len({repr(sorted(o.items())) for o in expected.values()})
    order = [id(p) for g in ours.param_groups for p in g['params']]
    trainable = [id(p) for p in net.parameters() if p.requires_grad]
    assert sorted(order) == sorted(trainable) and len(order) == len(set(order))
    for g in ours.param_groups:
        assert [id(p) for p in g['params']] == [i for i in trainable if i in {id(p) for p in g['params']}]
