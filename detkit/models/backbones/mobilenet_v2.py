"""MobileNetV2 (Sandler et al., 2018), the SSDLite backbone."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from detkit.registry import MODELS

from ..utils.layers import ConvNormAct, init_norm_constant, make_divisible
from ..utils.weights import load_pretrained, pretrained_path

__all__ = ['MobileNetV2', 'InvertedResidual']

# expand ratio, output channels, blocks, stride of the first block: the seven stages of the paper's Table 2
_ARCH = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise conv, linear 1x1 projection; residual when the shape is kept.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the depthwise conv.
        expand_ratio: hidden channels are ``in_channels * expand_ratio`` (no expansion conv when 1).
        act: activation after the expansion and depthwise convs (the projection is linear).
        bn_eps: batch norm epsilon.
        bn_momentum: batch norm momentum.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int, act: str = 'relu6',
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        norm = dict(norm=True, bn_eps=bn_eps, bn_momentum=bn_momentum)
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(in_channels, hidden, 1, act=act, **norm))
        layers += [
            ConvNormAct(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, act=act, **norm),
            ConvNormAct(hidden, out_channels, 1, act=None, **norm),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


@MODELS.register_module()
class MobileNetV2(nn.Module):
    """MobileNetV2 backbone with mmdetection's stage indexing.

    Layers are ``conv1`` (3x3 stride-2 stem), ``layer1`` .. ``layer7`` (the inverted-residual stages) and
    ``conv2`` (1x1 to 1280 channels). ``out_indices`` counts ``layer1`` as 0 .. ``layer7`` as 6 and ``conv2`` as
    7; SSDLite uses ``(4, 7)``: ``layer5`` (96 channels, stride 16, 20x20 at a 320 input) and ``conv2``
    (1280 channels, stride 32, 10x10).

    Args:
        widen_factor: multiplies the channels of every layer (rounded to multiples of 8); ``conv2`` keeps 1280
            unless ``widen_factor > 1``.
        out_indices: layers whose outputs are returned (0-7).
        frozen_stages: ``-1`` none, ``0`` the stem, ``k`` the stem and ``layer1..k`` are frozen (eval mode, no
            gradient).
        norm_eval: keep every batch norm in eval mode while training.
        act: ``'relu6'`` (the paper) or ``'relu'``.
        bn_eps: batch norm epsilon (SSDLite: 1e-3).
        bn_momentum: batch norm momentum, PyTorch convention (SSDLite: 0.03).
        pretrained: path of a local torchvision MobileNetV2 weight file (``mobilenet_v2-b0353104.pth``), or
            ``'torchvision://mobilenet_v2'`` for the copy in the torch hub cache (width 1.0 only); converted by
            :func:`~detkit.models.utils.weights.convert_torchvision_mobilenet_v2`. Nothing is downloaded.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)``, the mmdetection spelling of ``pretrained``.

    Attributes:
        out_channels: channels of each output, e.g. ``(96, 1280)``.
        out_strides: input pixels per output pixel of each output, e.g. ``(16, 32)``.
        index_strides: the stride of every index 0-7 (what each ``out_indices`` value would give).
    """

    def __init__(self, widen_factor: float = 1.0, out_indices: Sequence[int] = (1, 2, 4, 7), frozen_stages: int = -1,
                 norm_eval: bool = False, act: str = 'relu6', bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1, pretrained: str | None = None, init_cfg: dict | None = None) -> None:
        super().__init__()
        if widen_factor <= 0:
            raise ValueError(f'widen_factor must be positive, got {widen_factor}')
        out_indices = tuple(out_indices)
        if not out_indices or any(not 0 <= i <= 7 for i in out_indices):
            raise ValueError(f'out_indices must be in 0..7 (layer1..layer7, conv2), got {list(out_indices)}')
        if not -1 <= frozen_stages <= 7:
            raise ValueError(f'frozen_stages must be in -1..7, got {frozen_stages}')
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        norm = dict(norm=True, bn_eps=bn_eps, bn_momentum=bn_momentum)

        in_ch = make_divisible(32 * widen_factor, 8)
        self.conv1 = ConvNormAct(3, in_ch, 3, stride=2, padding=1, act=act, **norm)
        self.layers: list[str] = []
        channels = []
        for i, (expand, ch, num_blocks, stride) in enumerate(_ARCH):
            out_ch = make_divisible(ch * widen_factor, 8)
            blocks = [InvertedResidual(in_ch if b == 0 else out_ch, out_ch, stride if b == 0 else 1, expand,
                                       act=act, bn_eps=bn_eps, bn_momentum=bn_momentum) for b in range(num_blocks)]
            self.add_module(f'layer{i + 1}', nn.Sequential(*blocks))
            self.layers.append(f'layer{i + 1}')
            channels.append(out_ch)
            in_ch = out_ch
        last_ch = int(1280 * widen_factor) if widen_factor > 1.0 else 1280
        self.conv2 = ConvNormAct(in_ch, last_ch, 1, act=act, **norm)
        self.layers.append('conv2')
        channels.append(last_ch)
        self.out_channels = tuple(channels[i] for i in out_indices)
        self.index_strides, stride = {}, 2  # the stride-2 stem
        for i, (_, _, _, layer_stride) in enumerate(_ARCH):
            stride *= layer_stride
            self.index_strides[i] = stride
        self.index_strides[7] = stride  # conv2 is 1x1
        self.out_strides = tuple(self.index_strides[i] for i in out_indices)
        self.pretrained = pretrained_path(pretrained, init_cfg, 'MobileNetV2',
                                          torchvision_names=('mobilenet_v2',) if widen_factor == 1.0 else ())
        self.init_weights()

    def init_weights(self) -> None:
        """Truncated-normal convs (std 0.03, as mmdetection's from-scratch SSDLite), unit batch norms, then the
        pretrained file if any."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.03, a=-0.06, b=0.06)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        init_norm_constant(self)
        if self.pretrained is not None:
            load_pretrained(self, self.pretrained, converter='mobilenet_v2')
        self._freeze_stages()

    def _freeze_stages(self) -> None:
        frozen = [self.conv1] if self.frozen_stages >= 0 else []
        frozen += [getattr(self, f'layer{i}') for i in range(1, self.frozen_stages + 1)]
        for module in frozen:
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> MobileNetV2:
        """Switch modes, keeping frozen stages (and all batch norms with ``norm_eval``) in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """``Tensor[N, 3, H, W]`` -> one ``Tensor[N, C_i, H_i, W_i]`` per ``out_indices``."""
        x = self.conv1(x)
        outs = []
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
                if len(outs) == len(self.out_indices):
                    break  # later layers would only cost time
        return tuple(outs)
