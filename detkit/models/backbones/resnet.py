"""ResNet with torchvision's parameter names, so torchvision weight files load into it."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from detkit.registry import MODELS

from ..utils.weights import load_pretrained, pretrained_path

__all__ = ['ResNet', 'BasicBlock', 'Bottleneck']


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=bn_eps, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=bn_eps, momentum=bn_momentum)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place, as torchvision: one allocation fewer (batch norm keeps its input for backward)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, torchvision's "ResNet v1.5"), 1x1 expand x4, residual."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=bn_eps, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=bn_eps, momentum=bn_momentum)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, eps=bn_eps, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity  # in place (see BasicBlock)
        return self.relu(out)


_ARCH: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


@MODELS.register_module()
class ResNet(nn.Module):
    """ResNet backbone in torchvision's layout (``conv1``, ``bn1``, ``layer1`` .. ``layer4``).

    The standard network is ``ResNet(depth=50)``: stage strides ``(1, 2, 2, 2)`` after the stride-4 stem, outputs
    of 256/512/1024/2048 channels at strides 4/8/16/32.

    The NVIDIA SSD300-ResNet50 backbone is ``ResNet(depth=50, num_stages=3, strides=(1, 2, 1), out_indices=(2,))``:
    conv1 .. layer3 with the first block of layer3 at stride 1 (its 3x3 conv and its downsample conv; the 1x1
    conv1 has stride 1 anyway), giving a 38x38x1024 map at a 300x300 input. torchvision ``resnet50`` weights load
    into it unchanged (``layer4`` and ``fc`` are dropped).

    Args:
        depth: 18, 34, 50, 101 or 152.
        num_stages: number of residual stages kept (1-4).
        strides: stride of the first block of each kept stage.
        out_indices: stages (0-based) whose outputs are returned.
        frozen_stages: stages whose parameters are frozen and whose batch norms stay in eval mode: ``-1`` none,
            ``0`` the stem, ``k`` the stem and stages 1..k.
        norm_eval: keep every batch norm in eval mode (running statistics frozen) while training, as is usual with
            small per-GPU batches.
        bn_eps: batch norm epsilon.
        bn_momentum: batch norm momentum.
        base_channels: width of the stem and of the first stage (each later stage doubles it); 64 is the standard
            network, the only width torchvision weights fit. A narrower one (e.g. 32, about a quarter of the
            FLOPs) suits training from scratch on a CPU.
        pretrained: path of a local torchvision ResNet weight file (e.g. ``resnet50-0676ba61.pth``), or
            ``'torchvision://resnet50'`` (the depth's name) for the copy in the torch hub cache; nothing is
            downloaded (:func:`~detkit.models.utils.weights.torchvision_weight_path`).
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)``, the mmdetection spelling of ``pretrained``.

    Attributes:
        out_channels: channels of each output, e.g. ``(256, 512, 1024, 2048)``.
        out_strides: input pixels per output pixel of each output, e.g. ``(4, 8, 16, 32)``.
        index_strides: the stride of every stage index (what each ``out_indices`` value would give).
    """

    def __init__(self, depth: int = 50, num_stages: int = 4, strides: Sequence[int] = (1, 2, 2, 2),
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1, norm_eval: bool = False,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1, base_channels: int = 64,
                 pretrained: str | None = None, init_cfg: dict | None = None) -> None:
        super().__init__()
        if depth not in _ARCH:
            raise ValueError(f'depth must be one of {sorted(_ARCH)}, got {depth}')
        if not 1 <= num_stages <= 4:
            raise ValueError(f'num_stages must be in 1..4, got {num_stages}')
        if len(strides) != num_stages:
            raise ValueError(f'strides must give one stride per stage ({num_stages}), got {list(strides)}')
        out_indices = tuple(out_indices)
        if not out_indices or any(not 0 <= i < num_stages for i in out_indices):
            raise ValueError(f'out_indices must be stage indices in 0..{num_stages - 1}, got {list(out_indices)}')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in -1..{num_stages}, got {frozen_stages}')
        block, blocks = _ARCH[depth]
        self.depth = depth
        self.num_stages = num_stages
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        if base_channels < 1:
            raise ValueError(f'base_channels must be >= 1, got {base_channels}')
        self.conv1 = nn.Conv2d(3, base_channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_channels, eps=bn_eps, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = base_channels
        stage_channels = []
        for i in range(num_stages):
            planes = base_channels * 2**i
            layer, inplanes = self._make_stage(block, inplanes, planes, blocks[i], strides[i], bn_eps, bn_momentum)
            self.add_module(f'layer{i + 1}', layer)
            stage_channels.append(inplanes)
        self.out_channels = tuple(stage_channels[i] for i in out_indices)
        self.index_strides = {}
        stride = 4  # the 7x7 stride-2 stem and the stride-2 max pool
        for i in range(num_stages):
            stride *= strides[i]
            self.index_strides[i] = stride
        self.out_strides = tuple(self.index_strides[i] for i in out_indices)
        self.pretrained = pretrained_path(pretrained, init_cfg, f'ResNet(depth={depth})',
                                          torchvision_names=(f'resnet{depth}',) if base_channels == 64 else ())
        self.init_weights()

    @staticmethod
    def _make_stage(block: type[nn.Module], inplanes: int, planes: int, num_blocks: int, stride: int,
                    bn_eps: float, bn_momentum: float) -> tuple[nn.Sequential, int]:
        out_planes = planes * block.expansion
        downsample = None
        if stride != 1 or inplanes != out_planes:
            downsample = nn.Sequential(nn.Conv2d(inplanes, out_planes, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out_planes, eps=bn_eps, momentum=bn_momentum))
        layers = [block(inplanes, planes, stride, downsample, bn_eps, bn_momentum)]
        layers += [block(out_planes, planes, 1, None, bn_eps, bn_momentum) for _ in range(1, num_blocks)]
        return nn.Sequential(*layers), out_planes

    def init_weights(self) -> None:
        """torchvision's initialisation (Kaiming fan-out convs, unit batch norms), then the pretrained file."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.pretrained is not None:
            load_pretrained(self, self.pretrained, converter='resnet', num_stages=self.num_stages)
        self._freeze_stages()

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.conv1, self.bn1] + [getattr(self, f'layer{i}') for i in range(1, self.frozen_stages + 1)]

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNet:
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
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(self.num_stages):
            x = getattr(self, f'layer{i + 1}')(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
