"""MLFPN: the maps it gives, the official module sharing, and SFAM."""
import pytest
import torch
import torch.nn.functional as F

from detkit.models.necks import MLFPN
from detkit.models.necks.mlfpn import TUM


def inputs(shallow=40, n=1, channels=(32, 64), seed=0):
    g = torch.Generator().manual_seed(seed)
    deep = (shallow + 1) // 2
    return [torch.randn(n, channels[0], shallow, shallow, generator=g),
            torch.randn(n, channels[1], deep, deep, generator=g)]


@pytest.mark.parametrize('shallow, sizes', [(40, [40, 20, 10, 5, 3, 1]), (64, [64, 32, 16, 8, 4, 2]),
                                            (38, [38, 19, 10, 5, 3, 1])])
def test_scales_of_m2det320_and_512(shallow, sizes):
    neck = MLFPN((32, 64), planes=16, num_levels=3, num_scales=6).eval()
    outs = neck(inputs(shallow))
    assert [o.shape[-1] for o in outs] == sizes  # largest first
    assert all(o.shape[1] == 48 for o in outs) and neck.out_channels == (48,) * 6


def test_ffmv2_is_one_shared_module_as_in_the_official_checkpoints():
    neck = MLFPN((32, 64), planes=16, num_levels=4)
    assert all(m is neck.leach[0] for m in neck.leach)
    keys = neck.state_dict().keys()
    assert {f'leach.{i}.conv.weight' for i in range(4)} <= set(keys)  # repeated under every level's name
    leach_params = sum(p.numel() for p in neck.leach.parameters())
    assert leach_params == (256 + 512) * 8 + 2 * 8  # one 1x1 conv (768 -> planes // 2) and its batch norm, once
    # TUMs: the first reads planes // 2 channels, the others planes // 2 + planes (the previous TUM's largest map)
    assert neck.tums[0].layers[0].conv.in_channels == 8 and neck.tums[1].layers[0].conv.in_channels == 24
    assert neck.tums[1].latlayer[-1].conv.in_channels == 24
    assert all(m.momentum == 0.01 for m in neck.tums.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_tum_encoder_decoder():
    tum = TUM(8, planes=12, num_scales=6).eval()
    x = torch.randn(1, 8, 40, 40)
    outs = tum(x)
    assert [o.shape[-1] for o in outs] == [1, 3, 5, 10, 20, 40] and all(o.shape[1] == 12 for o in outs)
    # the largest output: smooth(upsample(previous) + lateral(input)), the lateral conv reading the TUM's input
    encoded = [x]
    for layer in tum.layers:
        encoded.append(layer(encoded[-1]))
    assert [e.shape[-1] for e in encoded] == [40, 20, 10, 5, 3, 1]
    decoded = [tum.toplayer(encoded[-1])]
    for i, lateral in enumerate(tum.latlayer):
        skip = lateral(encoded[4 - i])
        decoded.append(F.interpolate(decoded[-1], size=skip.shape[-2:]) + skip)
    torch.testing.assert_close(outs[-1], tum.smooth[-1](decoded[-1]))
    torch.testing.assert_close(outs[0], decoded[0])  # the coarsest map is not smoothed


def test_sfam_attention_and_sharing():
    neck = MLFPN((32, 64), planes=16, num_levels=2, sfam=True).eval()
    assert all(m is neck.sfam.fc1[0] for m in neck.sfam.fc1)
    plain = MLFPN((32, 64), planes=16, num_levels=2, sfam=False).eval()
    plain.load_state_dict({k: v for k, v in neck.state_dict().items() if not k.startswith('sfam')})
    x = inputs()
    with_sfam, without = neck(x), plain(x)
    # scale 1 (no norm after SFAM): x * sigmoid(fc2(relu(fc1(avgpool(x)))))
    w = torch.sigmoid(neck.sfam.fc2[1](F.relu(neck.sfam.fc1[1](without[1].mean(dim=(2, 3), keepdim=True)))))
    torch.testing.assert_close(with_sfam[1], without[1] * w)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match='exactly two backbone outputs'):
        MLFPN((32, 64, 128))
    neck = MLFPN((32, 64), planes=16, num_levels=1)
    with pytest.raises(ValueError, match='half the shallow'):
        neck([torch.zeros(1, 32, 40, 40), torch.zeros(1, 64, 10, 10)])
