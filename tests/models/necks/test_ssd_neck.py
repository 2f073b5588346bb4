import pytest
import torch

from detkit.models.necks import SSDNeck
from detkit.registry import MODELS


def test_ssd300_vgg_layout():
    neck = MODELS.build(dict(type='SSDNeck', in_channels=(512, 1024), extra_channels=(512, 256, 256, 256),
                             strides=(2, 2, 1, 1), paddings=(1, 1, 0, 0)))
    assert neck.out_channels == (512, 1024, 512, 256, 256, 256)
    outs = neck((torch.zeros(1, 512, 38, 38), torch.zeros(1, 1024, 19, 19)))
    assert [tuple(o.shape[1:]) for o in outs] == [(512, 38, 38), (1024, 19, 19), (512, 10, 10), (256, 5, 5),
                                                  (256, 3, 3), (256, 1, 1)]
    first = neck.extra_layers[0]
    assert (first[0].conv.out_channels, first[1].conv.kernel_size) == (256, (3, 3))  # mid = out / 2
    assert all(c.bias is not None for c in neck.modules() if isinstance(c, torch.nn.Conv2d))


def test_ssd512_layout_ends_with_a_4x4_conv():
    neck = SSDNeck(in_channels=(512, 1024), extra_channels=(512, 256, 256, 256, 256), strides=(2, 2, 2, 2, 1),
                   paddings=(1, 1, 1, 1, 1), last_kernel_size=4)
    outs = neck((torch.zeros(1, 512, 64, 64), torch.zeros(1, 1024, 32, 32)))
    assert [o.shape[-1] for o in outs] == [64, 32, 16, 8, 4, 2, 1]
    assert neck.extra_layers[-1][1].conv.kernel_size == (4, 4)


def test_ssdlite_depthwise_layout():
    neck = SSDNeck(in_channels=(96, 1280), extra_channels=(512, 256, 256, 128), strides=(2, 2, 2, 2),
                   paddings=(1, 1, 1, 1), norm=True, use_depthwise=True, act='relu6', bn_eps=1e-3, bn_momentum=0.03)
    outs = neck.eval()((torch.zeros(1, 96, 20, 20), torch.zeros(1, 1280, 10, 10)))  # 1x1 maps: running stats
    assert [o.shape[-1] for o in outs] == [20, 10, 5, 3, 2, 1]
    reduce, (dw, pw) = neck.extra_layers[0]
    assert reduce.conv.out_channels == 256 and dw.conv.groups == 256 and pw.conv.kernel_size == (1, 1)
    assert isinstance(dw.act, torch.nn.ReLU6) and dw.bn.momentum == 0.03 and dw.conv.bias is None


def test_mismatched_lengths_are_named():
    with pytest.raises(ValueError, match='paddings'):
        SSDNeck(in_channels=(8,), extra_channels=(8, 8), strides=(2, 2), paddings=(1,))
    neck = SSDNeck(in_channels=(8, 16), extra_channels=(8,), strides=(2,), paddings=(1,))
    with pytest.raises(ValueError, match='expects 2 backbone outputs'):
        neck((torch.zeros(1, 16, 4, 4),))
