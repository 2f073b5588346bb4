"""SSD's extra feature layers: a chain of small blocks that halve the resolution after the backbone."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from detkit.registry import MODELS

from ..utils.layers import ConvNormAct, init_conv_xavier, init_norm_constant

__all__ = ['SSDNeck']


@MODELS.register_module()
class SSDNeck(nn.Module):
    """Pass the backbone's feature maps through and add extra, coarser levels after the last one.

    Extra block ``i`` is a 1x1 conv to ``mid_channels[i]`` followed by a ``kernel x kernel`` conv to
    ``extra_channels[i]`` with ``strides[i]`` and ``paddings[i]`` (the kernel is 3, and ``last_kernel_size`` for
    the last block), each followed by an optional batch norm and the activation. The published layouts:

    * SSD300-VGG16 (torchvision ``ssd300_vgg16``): ``extra_channels=(512, 256, 256, 256)``, strides
      ``(2, 2, 1, 1)``, paddings ``(1, 1, 0, 0)``, mid channels half the outputs, ReLU, convs with bias:
      19 -> 10 -> 5 -> 3 -> 1.
    * SSD512-VGG16: ``extra_channels=(512, 256, 256, 256, 256)``, strides ``(2, 2, 2, 2, 1)``, paddings
      ``(1, 1, 1, 1, 1)``, ``last_kernel_size=4``: 32 -> 16 -> 8 -> 4 -> 2 -> 1.
    * SSD300-ResNet50 (NVIDIA): ``extra_channels=(512, 512, 256, 256, 256)``, ``mid_channels=(256, 256, 128,
      128, 128)``, strides ``(2, 2, 2, 1, 1)``, paddings ``(1, 1, 1, 0, 0)``, ``norm=True`` (bias-free convs
      with batch norm): 38 -> 19 -> 10 -> 5 -> 3 -> 1.
    * SSDLite: ``use_depthwise=True``, ``norm=True``, ``act='relu6'``, ``extra_channels=(512, 256, 256, 128)``,
      strides 2, paddings 1: the second conv of each block becomes a 3x3 depthwise conv + 1x1 pointwise conv.

    Args:
        in_channels: channels of the backbone's outputs (the detector fills them from ``backbone.out_channels``).
        extra_channels: output channels of each extra block.
        strides: stride of each block's second conv.
        paddings: padding of each block's second conv.
        mid_channels: channels after each block's 1x1 conv; default half of ``extra_channels``.
        last_kernel_size: kernel of the last block's second conv (4 for SSD512).
        norm: batch norm after every conv (bias-free convs).
        use_depthwise: depthwise-separable second convs (SSDLite).
        act: ``'relu'`` or ``'relu6'``.
        bn_eps: batch norm epsilon.
        bn_momentum: batch norm momentum.

    Attributes:
        out_channels: ``in_channels + extra_channels``, the channels of every output level.
    """

    def __init__(self, in_channels: Sequence[int], extra_channels: Sequence[int], strides: Sequence[int],
                 paddings: Sequence[int], mid_channels: Sequence[int] | None = None, last_kernel_size: int = 3,
                 norm: bool = False, use_depthwise: bool = False, act: str = 'relu', bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        in_channels, extra_channels = tuple(in_channels), tuple(extra_channels)
        if not in_channels:
            raise ValueError('in_channels must list the channels of at least one backbone output')
        if mid_channels is None:
            mid_channels = tuple(c // 2 for c in extra_channels)
        for name, values in (('strides', strides), ('paddings', paddings), ('mid_channels', mid_channels)):
            if len(values) != len(extra_channels):
                raise ValueError(f'{name} must have one value per extra block ({len(extra_channels)} '
                                 f'extra_channels), got {list(values)}')
        self.in_channels = in_channels
        self.out_channels = in_channels + extra_channels
        conv_args = dict(norm=norm, act=act, bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.extra_layers = nn.ModuleList()
        prev = in_channels[-1]
        for i, (out_ch, mid, stride, pad) in enumerate(zip(extra_channels, mid_channels, strides, paddings)):
            k = last_kernel_size if i == len(extra_channels) - 1 else 3
            if use_depthwise:
                spatial = nn.Sequential(
                    ConvNormAct(mid, mid, k, stride=stride, padding=pad, groups=mid, **conv_args),  # depthwise
                    ConvNormAct(mid, out_ch, 1, **conv_args))  # pointwise
            else:
                spatial = ConvNormAct(mid, out_ch, k, stride=stride, padding=pad, **conv_args)
            self.extra_layers.append(nn.Sequential(ConvNormAct(prev, mid, 1, **conv_args), spatial))
            prev = out_ch
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier-uniform convs with zero bias (as torchvision and mmdetection), unit batch norms."""
        init_conv_xavier(self)
        init_norm_constant(self)

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """Backbone outputs ``Tensor[N, C_i, H_i, W_i]`` -> those plus one map per extra block."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'SSDNeck expects {len(self.in_channels)} backbone outputs, got {len(inputs)}')
        outs = list(inputs)
        x = outs[-1]
        for layer in self.extra_layers:
            x = layer(x)
            outs.append(x)
        return tuple(outs)
