"""M2Det's Multi-Level Feature Pyramid Network (Zhao et al., AAAI 2019): FFMv1 -> TUMs fed by FFMv2 -> SFAM."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.registry import MODELS

from ..utils.layers import ConvNormAct

__all__ = ['MLFPN', 'TUM', 'SFAM']


def _conv(in_ch: int, out_ch: int, k: int, stride: int = 1, padding: int = 0,
          bn_momentum: float = 0.01) -> ConvNormAct:
    """M2Det's BasicConv: bias-free conv, batch norm (momentum 0.01 in M2Det), ReLU."""
    return ConvNormAct(in_ch, out_ch, k, stride=stride, padding=padding, norm=True, act='relu',
                       bn_momentum=bn_momentum)


class TUM(nn.Module):
    """Thinned U-shaped Module: an encoder of strided 3x3 convs and a decoder with lateral 3x3 convs.

    The encoder halves the input ``num_scales - 2`` times with stride-2 convs and ends with a 3x3 conv without
    padding (5 -> 3 -> 1 at M2Det320's 40x40 input: 40, 20, 10, 5, 3, 1). The decoder starts from a 1x1 conv of
    the coarsest map and adds each upsampled map to a 3x3 lateral conv of the encoder map of that size (the last
    one reads the TUM's input); with ``smooth``, a 1x1 conv follows each sum.

    Args:
        in_channels: input channels (FFMv2's output, plus the previous TUM's largest output after the first TUM).
        planes: channels of every conv.
        num_scales: number of outputs (6).
        smooth: the 1x1 convs after the decoder's sums.
        bn_momentum: momentum of its batch norms.

    Module names are the official implementation's (``layers``, ``toplayer``, ``latlayer``, ``smooth``, each
    ``i.conv`` / ``i.bn``), so its checkpoints map by renaming the TUM alone.
    """

    def __init__(self, in_channels: int, planes: int = 256, num_scales: int = 6, smooth: bool = True,
                 bn_momentum: float = 0.01) -> None:
        super().__init__()
        if num_scales < 3:
            raise ValueError(f'TUM: num_scales must be >= 3, got {num_scales}')
        self.num_scales = num_scales
        bn = dict(bn_momentum=bn_momentum)
        self.layers = nn.Sequential(_conv(in_channels, planes, 3, 2, 1, **bn))
        for i in range(num_scales - 2):
            last = i == num_scales - 3
            self.layers.append(_conv(planes, planes, 3, 1 if last else 2, 0 if last else 1, **bn))
        self.toplayer = nn.Sequential(_conv(planes, planes, 1, **bn))
        self.latlayer = nn.Sequential(*[_conv(planes, planes, 3, 1, 1, **bn) for _ in range(num_scales - 2)],
                                      _conv(in_channels, planes, 3, 1, 1, **bn))
        self.smooth = (nn.Sequential(*[_conv(planes, planes, 1, **bn) for _ in range(num_scales - 1)]) if smooth
                       else None)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``Tensor[N, in_channels, H, W]`` -> ``num_scales`` maps ``Tensor[N, planes, H_s, W_s]``, coarsest first
        (1x1 ... HxW at M2Det's input sizes)."""
        encoded = [x]
        for layer in self.layers:
            encoded.append(layer(encoded[-1]))
        decoded = [self.toplayer(encoded[-1])]
        for i, lateral in enumerate(self.latlayer):
            skip = lateral(encoded[len(self.layers) - 1 - i])
            decoded.append(F.interpolate(decoded[-1], size=skip.shape[-2:], mode='nearest') + skip)
        if self.smooth is None:
            return decoded
        return [decoded[0]] + [smooth(d) for smooth, d in zip(self.smooth, decoded[1:])]


class SFAM(nn.Module):
    """Scale-wise Feature Aggregation Module: squeeze-and-excitation channel attention on every scale.

    Its two 1x1 convs are one module shared by all scales (the official ``[conv] * num_scales`` list), which is what
    its checkpoints hold.

    Args:
        channels: channels of each scale (``planes * num_levels``).
        num_scales: number of scales.
        reduction: channel reduction of the squeeze (16).
    """

    def __init__(self, channels: int, num_scales: int, reduction: int = 16) -> None:
        super().__init__()
        fc1 = nn.Conv2d(channels, channels // reduction, 1)
        fc2 = nn.Conv2d(channels // reduction, channels, 1)
        self.fc1 = nn.ModuleList([fc1] * num_scales)
        self.fc2 = nn.ModuleList([fc2] * num_scales)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for x, fc1, fc2 in zip(feats, self.fc1, self.fc2):
            attention = torch.sigmoid(fc2(F.relu(fc1(F.adaptive_avg_pool2d(x, 1)))))
            out.append(x * attention)
        return out


@MODELS.register_module()
class MLFPN(nn.Module):
    """M2Det's neck: ``num_levels`` TUMs stacked on a fused base feature, their outputs joined scale by scale.

    1. **FFMv1** fuses two backbone levels into the base feature: a 3x3 conv of the shallow one (to 256 channels)
       concatenated with a 1x1 conv of the deep one (to 512) upsampled to the shallow one's size (768 channels).
    2. **FFMv2** (``leach``): a 1x1 conv of the base feature to ``planes // 2`` channels, concatenated with the
       previous TUM's largest output, feeds each TUM (the first TUM gets the 1x1 conv alone). As in the official
       code this conv is **one module shared by every level** (``[conv] * num_levels``): parameters are counted
       once, and the state dict repeats them under ``leach.0`` .. ``leach.7`` as the official checkpoints do.
    3. **TUMs** (:class:`TUM`), each giving ``num_scales`` maps.
    4. The maps of one scale from all TUMs are concatenated (``planes * num_levels`` channels), reweighted by
       **SFAM** (:class:`SFAM`, optional; the published M2Det320/512 configs turn it off), and the largest scale
       passes through a batch norm (the official ``Norm``).

    M2Det320-VGG16: the backbone's conv4_3 (40x40x512) and fc7 (20x20x1024) give six 2048-channel maps of 40, 20,
    10, 5, 3 and 1 pixels; at 512, 64 .. 2.

    Args:
        in_channels: channels of the two backbone outputs, shallow then deep (filled by the detector).
        planes: channels of the TUMs (256).
        num_levels: number of TUMs (8).
        num_scales: outputs per TUM and of the neck (6).
        smooth: the TUMs' smoothing convs.
        sfam: add SFAM.
        shallow_channels: FFMv1's channels for the shallow level (256).
        deep_channels: FFMv1's channels for the deep level (512).
        bn_momentum: momentum of the FFMs' and TUMs' batch norms (M2Det's 0.01 for long schedules; short runs want
            PyTorch's 0.1, so that the running statistics follow the weights).

    A TUM whose coarsest scale is 1x1 (M2Det's 3 -> 1 at 320 and 512) normalises that map over the batch alone:
    ``N`` values per channel, whose running statistics may not stand in for the batch ones at test when ``N`` is
    small. Small-batch recipes choose ``num_scales`` so that the coarsest map stays larger than 1x1
    (``configs/quickstart/m2det_shapes.py``: 24, 12, 6, 4; why: docs/design/quickstart_recipes.md).

    Attributes:
        out_channels: ``(planes * num_levels,) * num_scales``, largest scale first.
    """

    def __init__(self, in_channels: Sequence[int], planes: int = 256, num_levels: int = 8, num_scales: int = 6,
                 smooth: bool = True, sfam: bool = False, shallow_channels: int = 256, deep_channels: int = 512,
                 bn_momentum: float = 0.01) -> None:
        super().__init__()
        in_channels = tuple(int(c) for c in in_channels)
        if len(in_channels) != 2:
            raise ValueError(f'MLFPN fuses exactly two backbone outputs (shallow, deep), got {len(in_channels)} with '
                             f'channels {in_channels}: set the backbone\'s out_indices to two levels, the deep one '
                             'at twice the stride (VGG16: (22, 34); ResNet: strides (1, 2, 1, 2), out_indices (2, 3))')
        if num_levels < 1 or planes % 2:
            raise ValueError(f'MLFPN: num_levels must be >= 1 and planes even, got {num_levels} and {planes}')
        self.in_channels = in_channels
        self.planes = planes
        self.num_levels = num_levels
        self.num_scales = num_scales
        self.out_channels = (planes * num_levels,) * num_scales
        bn = dict(bn_momentum=bn_momentum)
        self.reduce = _conv(in_channels[0], shallow_channels, 3, 1, 1, **bn)
        self.up_reduce = _conv(in_channels[1], deep_channels, 1, **bn)
        leach = _conv(shallow_channels + deep_channels, planes // 2, 1, **bn)
        self.leach = nn.ModuleList([leach] * num_levels)  # one module, shared (see the class docstring)
        self.tums = nn.ModuleList(TUM(planes // 2 + (planes if i else 0), planes, num_scales, smooth, bn_momentum)
                                  for i in range(num_levels))
        self.sfam = SFAM(planes * num_levels, num_scales) if sfam else None
        self.norm = nn.BatchNorm2d(planes * num_levels)
        self.init_weights()

    def init_weights(self) -> None:
        """The official initialisation: Kaiming-normal (fan out) convs, zero biases, unit batch norms."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """``(shallow, deep)`` backbone maps -> ``num_scales`` maps ``Tensor[N, planes * num_levels, H_s, W_s]``,
        largest first."""
        if len(inputs) != 2:
            raise ValueError(f'MLFPN expects 2 backbone outputs (shallow, deep), got {len(inputs)}')
        shallow, deep = inputs
        if tuple(deep.shape[-2:]) != tuple((v + 1) // 2 for v in shallow.shape[-2:]):
            raise ValueError(f'MLFPN: the deep backbone map must be half the shallow one\'s size (twice its '
                             f'stride), got {tuple(shallow.shape[-2:])} and {tuple(deep.shape[-2:])}')
        base = torch.cat([self.reduce(shallow), F.interpolate(self.up_reduce(deep), size=shallow.shape[-2:],
                                                              mode='nearest')], dim=1)  # FFMv1
        outs = [self.tums[0](self.leach[0](base))]
        for leach, tum in zip(list(self.leach)[1:], list(self.tums)[1:]):
            outs.append(tum(torch.cat([leach(base), outs[-1][-1]], dim=1)))  # FFMv2: + the previous largest map
        # scale by scale across the TUMs, largest scale first
        feats = [torch.cat([tum_out[s] for tum_out in outs], dim=1) for s in range(self.num_scales - 1, -1, -1)]
        if self.sfam is not None:
            feats = self.sfam(feats)
        feats[0] = self.norm(feats[0])
        return tuple(feats)
