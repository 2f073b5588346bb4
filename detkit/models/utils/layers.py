"""Small building blocks shared by backbones, necks and heads."""
from __future__ import annotations

from torch import nn

__all__ = ['ACTIVATIONS', 'make_activation', 'ConvNormAct', 'init_conv_xavier', 'init_norm_constant',
           'make_divisible']

#: activation names accepted by :func:`make_activation`
ACTIVATIONS = ('relu', 'relu6', None)


def make_activation(act: str | None) -> nn.Module | None:
    """``'relu'``, ``'relu6'`` (in place) or ``None`` (no activation)."""
    if act == 'relu':
        return nn.ReLU(inplace=True)
    if act == 'relu6':
        return nn.ReLU6(inplace=True)
    if act is None:
        return None
    raise ValueError(f'act must be one of {ACTIVATIONS}, got {act!r}')


class ConvNormAct(nn.Sequential):
    """``Conv2d`` followed by an optional ``BatchNorm2d`` and an optional activation.

    Children are named ``conv``, ``bn`` and ``act``. The convolution has a bias only without batch norm, whose
    shift makes a bias redundant.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        stride: stride.
        padding: zero padding on each side.
        dilation: dilation.
        groups: ``in_channels`` for a depthwise convolution.
        norm: add a ``BatchNorm2d``.
        act: ``'relu'``, ``'relu6'`` or ``None``.
        bn_eps: batch norm epsilon.
        bn_momentum: batch norm momentum (PyTorch convention: weight of the new batch statistics).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, norm: bool = False, act: str | None = 'relu',
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=not norm)
        if norm:
            self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        activation = make_activation(act)
        if activation is not None:
            self.act = activation


def init_conv_xavier(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every ``Conv2d`` in ``module`` (SSD extra layers and heads)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_norm_constant(module: nn.Module) -> None:
    """Weight 1, bias 0 for every batch norm in ``module``."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def make_divisible(value: float, divisor: int = 8, min_ratio: float = 0.9) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than ``1 - min_ratio`` of it.

    The MobileNet rule, so that width-multiplied networks keep hardware-friendly channel counts.
    """
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < min_ratio * value:
        new_value += divisor
    return new_value
