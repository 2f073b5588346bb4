import pytest
import torch
import torchvision

from detkit.models.backbones import MobileNetV2
from detkit.registry import MODELS


def test_ssdlite_outputs():
    net = MODELS.build(dict(type='MobileNetV2', out_indices=(4, 7), bn_eps=1e-3, bn_momentum=0.03))
    assert net.out_channels == (96, 1280)
    c5, c7 = net(torch.zeros(1, 3, 320, 320))
    assert c5.shape == (1, 96, 20, 20) and c7.shape == (1, 1280, 10, 10)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)
    assert all(isinstance(m, torch.nn.ReLU6) for m in net.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)))


def test_same_size_as_torchvision_mobilenet_v2_features():
    ours = sum(p.numel() for p in MobileNetV2(out_indices=(7,)).parameters())
    theirs = sum(p.numel() for p in torchvision.models.mobilenet_v2().features.parameters())
    assert ours == theirs == 2_223_872


def test_widen_factor():
    net = MobileNetV2(widen_factor=0.5, out_indices=(0, 4, 6, 7))
    assert net.out_channels == (8, 48, 160, 1280)  # 16 * 0.5 rounds up to the minimum of 8
    assert MobileNetV2(widen_factor=1.5, out_indices=(7,)).out_channels == (1920,)


def test_frozen_stages():
    net = MobileNetV2(frozen_stages=2).train()
    assert not any(p.requires_grad for p in net.layer2.parameters())
    assert all(p.requires_grad for p in net.layer3.parameters())
    assert not net.layer1[0].conv[0].bn.training


def test_bad_out_indices():
    with pytest.raises(ValueError, match='out_indices'):
        MobileNetV2(out_indices=(8,))
