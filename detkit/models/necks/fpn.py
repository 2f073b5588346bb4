"""Feature Pyramid Network (Lin et al., CVPR 2017), RetinaNet's neck."""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from detkit.registry import MODELS

from ..utils.layers import ConvNormAct

__all__ = ['FPN']

_EXTRA_SOURCES = ('on_input', 'on_lateral', 'on_output')


@MODELS.register_module()
class FPN(nn.Module):
    """Top-down pyramid with lateral connections, plus optional extra coarser levels.

    Backbone levels ``start_level .. end_level`` each get a 1x1 lateral conv to ``out_channels``; from the coarsest
    down, each lateral map is added to the nearest-neighbour upsampled map above it, and a 3x3 conv smooths each
    sum. Levels beyond the backbone's (``num_outs`` minus the used backbone levels) come from stride-2 3x3 convs
    (``add_extra_convs``) or, without them, from stride-2 subsampling of the last output (Faster R-CNN's P6):

    * ``'on_input'``: the first extra conv reads the last used backbone map (C5; mmdetection's RetinaNet);
    * ``'on_lateral'``: it reads the last lateral map;
    * ``'on_output'``: it reads the last output (P5; torchvision's RetinaNet, with ``relu_before_extra_convs``);

    and each further extra conv reads the previous extra level (after a ReLU with ``relu_before_extra_convs``).
    ``True`` means ``'on_input'``. Module names follow mmdetection (``lateral_convs.i.conv``,
    ``fpn_convs.i.conv``, the extra convs after the smoothing convs in ``fpn_convs``), so its checkpoints map 1:1.

    RetinaNet R50-FPN: ``in_channels=(256, 512, 1024, 2048)`` (filled by the detector), ``start_level=1``,
    ``num_outs=5``, ``add_extra_convs='on_input'``: P3-P7 at strides 8-128.

    Args:
        in_channels: channels of the backbone outputs (the detector fills them).
        out_channels: channels of every output level.
        num_outs: number of output levels.
        start_level: first backbone output used.
        end_level: last backbone output used (inclusive); ``-1`` for the last.
        add_extra_convs: ``False``, ``True``, ``'on_input'``, ``'on_lateral'`` or ``'on_output'``.
        relu_before_extra_convs: a ReLU before every extra conv after the first (torchvision's ``LastLevelP6P7``:
            P7 reads ReLU(P6)).
        norm: batch norm after every conv (bias-free convs).
        upsample_mode: interpolation of the top-down path.

    Attributes:
        out_channels: ``(out_channels,) * num_outs``.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, num_outs: int = 5, start_level: int = 0,
                 end_level: int = -1, add_extra_convs: bool | str = False, relu_before_extra_convs: bool = False,
                 norm: bool = False, upsample_mode: str = 'nearest') -> None:
        super().__init__()
        in_channels = tuple(int(c) for c in in_channels)
        num_ins = len(in_channels)
        if end_level == -1 or end_level == num_ins - 1:
            backbone_end = num_ins
        elif 0 <= end_level < num_ins:
            backbone_end = end_level + 1
        else:
            raise ValueError(f'FPN: end_level must be -1 or in 0..{num_ins - 1} ({num_ins} backbone outputs '
                             f'{in_channels}), got {end_level}')
        if not 0 <= start_level < backbone_end:
            raise ValueError(f'FPN: start_level must be in 0..{backbone_end - 1} for {num_ins} backbone outputs '
                             f'{in_channels}, got {start_level}')
        used = backbone_end - start_level
        if num_outs < used:
            raise ValueError(f'FPN: num_outs={num_outs} is fewer than the {used} backbone levels used (start_level '
                             f'{start_level} .. end_level {backbone_end - 1})')
        if add_extra_convs is True:
            add_extra_convs = 'on_input'
        if add_extra_convs not in (False,) + _EXTRA_SOURCES:
            raise ValueError(f'FPN: add_extra_convs must be False, True or one of {_EXTRA_SOURCES}, got '
                             f'{add_extra_convs!r}')
        self.in_channels = in_channels
        self.out_channels = (int(out_channels),) * num_outs
        self.num_outs = num_outs
        self.start_level = start_level
        self.backbone_end_level = backbone_end
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_mode = upsample_mode
        conv = dict(norm=norm, act=None)
        self.lateral_convs = nn.ModuleList(ConvNormAct(in_channels[i], out_channels, 1, **conv)
                                           for i in range(start_level, backbone_end))
        self.fpn_convs = nn.ModuleList(ConvNormAct(out_channels, out_channels, 3, padding=1, **conv)
                                       for _ in range(start_level, backbone_end))
        if add_extra_convs:
            for k in range(num_outs - used):
                in_ch = in_channels[backbone_end - 1] if k == 0 and add_extra_convs == 'on_input' else out_channels
                self.fpn_convs.append(ConvNormAct(in_ch, out_channels, 3, stride=2, padding=1, **conv))
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier-uniform convs with zero bias (mmdetection's FPN), unit batch norms."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """Backbone outputs ``Tensor[N, C_i, H_i, W_i]`` -> ``num_outs`` maps ``Tensor[N, out_channels, H_l, W_l]``,
        finest first."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'FPN expects {len(self.in_channels)} backbone outputs, got {len(inputs)}')
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):  # top-down: coarse to fine
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:],
                                                              mode=self.upsample_mode)
        used = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(used)]
        if self.num_outs > used:
            if not self.add_extra_convs:
                for _ in range(self.num_outs - used):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                if self.add_extra_convs == 'on_input':
                    source = inputs[self.backbone_end_level - 1]
                elif self.add_extra_convs == 'on_lateral':
                    source = laterals[-1]
                else:
                    source = outs[-1]
                outs.append(self.fpn_convs[used](source))
                for i in range(used + 1, self.num_outs):
                    prev = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](prev))
        return tuple(outs)
