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


def test_torchvision_weights_give_torchvision_features(tmp_path):
    """convert_torchvision_mobilenet_v2: torchvision's mobilenet_v2 weights (random, non-trivial batch norms) give
    the outputs of torchvision's own layers: features[:14] is layer5's output, features[:19] conv2's."""
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2()
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    path = tmp_path / 'mobilenet_v2.pth'
    torch.save(tv.state_dict(), path)
    net = MODELS.build(dict(type='MobileNetV2', out_indices=(4, 7), pretrained=str(path))).eval()
    tv.eval()
    x = torch.randn(1, 3, 96, 96)
    c5, c7 = net(x)
    with torch.no_grad():
        torch.testing.assert_close(c5, tv.features[:14](x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(c7, tv.features(x), rtol=1e-4, atol=1e-5)


def test_torchvision_converter_names_unknown_keys():
    from detkit.models.utils.weights import convert_torchvision_mobilenet_v2

    with pytest.raises(ValueError, match="'features.19.0.weight'"):
        convert_torchvision_mobilenet_v2({'features.19.0.weight': torch.zeros(1)})
