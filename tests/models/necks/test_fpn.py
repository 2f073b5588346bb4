"""FPN against torchvision's FeaturePyramidNetwork + LastLevelP6P7 with the same weights, and mmdetection's
extra-level variants."""
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

from detkit.models.necks import FPN
from detkit.registry import MODELS


def inputs(n=2, channels=(8, 16, 32), sizes=(16, 8, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, s, s + 1, generator=g) for c, s in zip(channels, sizes)]  # non-square maps


def test_equals_torchvision_p6p7_from_p5():
    tv = FeaturePyramidNetwork([8, 16, 32], 12, extra_blocks=LastLevelP6P7(12, 12)).eval()
    ours = MODELS.build(dict(type='FPN', in_channels=(8, 16, 32), out_channels=12, num_outs=5,
                             add_extra_convs='on_output', relu_before_extra_convs=True))
    mapping = {}
    for i in range(3):
        mapping[f'inner_blocks.{i}.0'] = f'lateral_convs.{i}.conv'
        mapping[f'layer_blocks.{i}.0'] = f'fpn_convs.{i}.conv'
    mapping['extra_blocks.p6'] = 'fpn_convs.3.conv'
    mapping['extra_blocks.p7'] = 'fpn_convs.4.conv'
    state = {}
    for key, value in tv.state_dict().items():
        prefix, param = key.rsplit('.', 1)
        state[f'{mapping[prefix]}.{param}'] = value
    assert set(state) == set(ours.state_dict())
    ours.load_state_dict(state)
    x = inputs()
    expected = list(tv(OrderedDict((str(i), t) for i, t in enumerate(x))).values())
    got = ours(x)
    assert [tuple(t.shape) for t in got] == [(2, 12, 16, 17), (2, 12, 8, 9), (2, 12, 4, 5), (2, 12, 2, 3), (2, 12, 1, 2)]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_on_input_start_level_and_max_pool_levels():
    x = inputs(channels=(4, 8, 16, 32), sizes=(32, 16, 8, 4))
    fpn = FPN((4, 8, 16, 32), out_channels=6, num_outs=5, start_level=1, add_extra_convs='on_input')
    outs = fpn(x)
    assert fpn.out_channels == (6,) * 5 and len(fpn.lateral_convs) == 3
    assert [o.shape[-2:] for o in outs] == [(16, 17), (8, 9), (4, 5), (2, 3), (1, 2)]
    # P6 reads C5 (the 32-channel input), P7 reads P6 without a ReLU
    torch.testing.assert_close(outs[3], fpn.fpn_convs[3](x[3]))
    torch.testing.assert_close(outs[4], fpn.fpn_convs[4](outs[3]))
    # the top-down path: P4 = smooth(lateral(C4) + upsample(lateral(C5)))
    lat5 = fpn.lateral_convs[2](x[3])
    lat4 = fpn.lateral_convs[1](x[2]) + F.interpolate(lat5, size=(8, 9), mode='nearest')
    torch.testing.assert_close(outs[1], fpn.fpn_convs[1](lat4))
    # without extra convs the extra levels subsample the last output (Faster R-CNN's P6)
    plain = FPN((4, 8, 16, 32), out_channels=6, num_outs=5)
    outs = plain(x)
    assert len(plain.fpn_convs) == 4
    torch.testing.assert_close(outs[4], outs[3][..., ::2, ::2])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='start_level'):
        FPN((4, 8), start_level=2)
    with pytest.raises(ValueError, match='num_outs=1'):
        FPN((4, 8), num_outs=1)
    with pytest.raises(ValueError, match='add_extra_convs'):
        FPN((4, 8), add_extra_convs='on_p5')
    with pytest.raises(ValueError, match='end_level'):
        FPN((4, 8), end_level=5)
    with pytest.raises(ValueError, match='expects 2 backbone outputs'):
        FPN((4, 8), num_outs=2)([torch.zeros(1, 4, 8, 8)])
