"""VGG16 in the layout of the SSD paper (fc6/fc7 as convolutions, L2-normalised conv4_3)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.registry import MODELS

from ..utils.layers import init_conv_xavier
from ..utils.weights import load_pretrained, pretrained_path

__all__ = ['SSDVGG', 'L2Norm']

# VGG16 ("configuration D"): channels of each 3x3 conv, 'M' for a 2x2 max pool
_VGG16 = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512)


class L2Norm(nn.Module):
    """Normalise each location's feature vector to unit L2 norm, then scale it per channel.

    conv4_3 activations are much larger than those of deeper layers; SSD normalises them and learns the scale
    (initialised at 20) so that one head can be trained on both.

    Args:
        num_channels: channels of the input.
        scale: initial value of the learnable per-channel scale.
        eps: smallest norm divided by, so a zero vector stays zero.
    """

    def __init__(self, num_channels: int, scale: float = 20.0, eps: float = 1e-12) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_channels,), float(scale)))
        self.scale = float(scale)
        self.eps = eps

    def reset_parameters(self) -> None:
        nn.init.constant_(self.weight, self.scale)

    def forward(self, x: Tensor) -> Tensor:
        """``Tensor[N, C, H, W]`` -> ``Tensor[N, C, H, W]``."""
        return F.normalize(x, dim=1, eps=self.eps) * self.weight.view(1, -1, 1, 1)


@MODELS.register_module()
class SSDVGG(nn.Module):
    """VGG16 as the SSD backbone.

    ``features`` holds torchvision's ``vgg16().features`` layers 0-29 (conv1_1 .. conv5_3 and their ReLUs, so
    torchvision VGG16 weight files load as they are), with pool3 in ceil mode (75 -> 38 at a 300 input, as in the
    paper), then SSD's layers 30-34: pool5 as a 3x3 stride-1 pool, fc6 as a 3x3 conv with dilation 6 to 1024
    channels, ReLU, fc7 as a 1x1 conv, ReLU. At a 300x300 input the default outputs are conv4_3 (38x38x512, after
    :class:`L2Norm`) and fc7 (19x19x1024).

    Args:
        out_indices: indices into ``features`` after which a feature map is output; 22 is the ReLU of conv4_3 and
            34 the ReLU of fc7.
        l2_norm_scale: initial scale of the :class:`L2Norm` applied to the first output; ``None`` for no
            normalisation.
        widen_factor: multiplies every channel count (1.0 is VGG16; smaller values make tiny models for tests).
        pretrained: path of a local torchvision VGG16 weight file (``vgg16-397923af.pth`` or a checkpoint holding
            it) loaded into conv1_1..conv5_3, or ``'torchvision://vgg16'`` for the copy in the torch hub cache; fc6
            and fc7 keep their initialisation. Nothing is downloaded.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)``, the mmdetection spelling of ``pretrained``.

    Attributes:
        out_channels: channels of each output, e.g. ``(512, 1024)``.
        out_strides: input pixels per output pixel of each output, e.g. ``(8, 16)``.
        index_strides: the stride after every layer index of ``features`` (what each ``out_indices`` value gives).
    """

    def __init__(self, out_indices: Sequence[int] = (22, 34), l2_norm_scale: float | None = 20.0,
                 widen_factor: float = 1.0, pretrained: str | None = None, init_cfg: dict | None = None) -> None:
        super().__init__()
        if widen_factor <= 0:
            raise ValueError(f'widen_factor must be positive, got {widen_factor}')
        layers: list[nn.Module] = []
        channels: list[int] = []  # output channels after each layer
        in_ch = 3
        num_pools = 0
        for v in _VGG16:
            if v == 'M':
                num_pools += 1
                # ceil mode on pool3 only, as in the SSD paper and torchvision: 75 -> 38 at a 300 input
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=num_pools == 3))
                channels.append(in_ch)
            else:
                out_ch = max(1, int(round(v * widen_factor)))
                layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels += [out_ch, out_ch]
                in_ch = out_ch
        fc_ch = max(1, int(round(1024 * widen_factor)))
        layers += [
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),  # pool5: keeps the 19x19 resolution
            nn.Conv2d(in_ch, fc_ch, kernel_size=3, padding=6, dilation=6),  # fc6, atrous
            nn.ReLU(inplace=True),
            nn.Conv2d(fc_ch, fc_ch, kernel_size=1),  # fc7
            nn.ReLU(inplace=True),
        ]
        channels += [in_ch, fc_ch, fc_ch, fc_ch, fc_ch]
        self.features = nn.Sequential(*layers)

        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices or list(out_indices) != sorted(set(out_indices)) or not (
                0 <= out_indices[0] and out_indices[-1] < len(self.features)):
            raise ValueError(f'out_indices must be increasing indices into the {len(self.features)} feature layers, '
                             f'got {out_indices}')
        self.out_indices = out_indices
        self.out_channels = tuple(channels[i] for i in out_indices)
        self.index_strides, stride = {}, 1
        for i, layer in enumerate(self.features):
            if isinstance(layer, nn.MaxPool2d):
                stride *= layer.stride if isinstance(layer.stride, int) else layer.stride[0]
            self.index_strides[i] = stride
        self.out_strides = tuple(self.index_strides[i] for i in out_indices)
        self.l2_norm = L2Norm(self.out_channels[0], l2_norm_scale) if l2_norm_scale is not None else None
        self.pretrained = pretrained_path(pretrained, init_cfg, 'SSDVGG',
                                          torchvision_names=('vgg16',) if widen_factor == 1.0 else ())
        self.init_weights()

    def init_weights(self) -> None:
        """Kaiming init for the VGG convs, Xavier for fc6/fc7 (as torchvision), then the pretrained file if any."""
        for m in self.features[:30].modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                nn.init.zeros_(m.bias)
        init_conv_xavier(self.features[30:])
        if self.l2_norm is not None:
            self.l2_norm.reset_parameters()
        if self.pretrained is not None:
            load_pretrained(self, self.pretrained, converter='vgg16')

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """``Tensor[N, 3, H, W]`` -> one ``Tensor[N, C_i, H_i, W_i]`` per ``out_indices``."""
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.out_indices:
                outs.append(x)
                if len(outs) == len(self.out_indices):
                    break
        if self.l2_norm is not None:
            outs[0] = self.l2_norm(outs[0])
        return tuple(outs)
