"""SSD default boxes ("anchors") for a fixed, square input size."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from detkit.registry import TASK_UTILS

__all__ = ['SSDAnchorGenerator', 'ssd_anchor_sizes']

# The first level of SSD does not follow the linear size progression of the other levels: the paper (and every
# implementation since) gives it a smaller, hand-picked size. Keys: (input_size, basesize_ratio_range[0]);
# values: (min, max) of the first level in percent of the input size.
_FIRST_LEVEL_PERCENT = {
    (300, 15): (7, 15),   # SSD300 COCO
    (300, 20): (10, 20),  # SSD300 VOC
    (512, 10): (4, 10),   # SSD512 COCO
    (512, 15): (7, 15),   # SSD512 VOC
}


def ssd_anchor_sizes(input_size: int, basesize_ratio_range: tuple[float, float],
                     num_levels: int) -> tuple[list[int], list[int]]:
    """Per-level min and max anchor sizes (pixels) from a base-size ratio range, as mmdetection computes them.

    Levels 1.. get sizes linearly spaced between ``basesize_ratio_range`` (in percent of the input, with an integer
    step), each level's max being the next level's min; level 0 gets the hand-picked size of the SSD paper.

    Example: ``ssd_anchor_sizes(300, (0.15, 0.9), 6)`` gives min ``[21, 45, 99, 153, 207, 261]`` and max
    ``[45, 99, 153, 207, 261, 315]``.

    Args:
        input_size: 300 or 512 (the first level's size is only defined for these).
        basesize_ratio_range: ``(smallest, largest)`` ratio of levels 1.. to the input size.
        num_levels: number of feature levels (at least 3).

    Returns:
        ``(min_sizes, max_sizes)``, one integer per level.

    Raises:
        ValueError: for an input size or ratio range whose first level is not defined.
    """
    # mmdetection truncates with int(ratio * 100); rounding gives the same percent for every published range
    # and does not turn e.g. 0.29 (28.999999999999996 in floating point) into 28.
    min_percent = int(round(basesize_ratio_range[0] * 100))
    max_percent = int(round(basesize_ratio_range[1] * 100))
    key = (input_size, min_percent)
    if key not in _FIRST_LEVEL_PERCENT:
        known = ', '.join(f'input_size={s} with basesize_ratio_range[0]={p / 100}' for s, p in _FIRST_LEVEL_PERCENT)
        raise ValueError(f'basesize_ratio_range={tuple(basesize_ratio_range)} with input_size={input_size} has no '
                         f'published first-level anchor size (known: {known}); pass min_sizes and max_sizes '
                         'explicitly for other inputs')
    if num_levels < 3:
        raise ValueError(f'basesize_ratio_range needs at least 3 levels, got {num_levels}; pass min_sizes and '
                         'max_sizes explicitly')
    step = int(math.floor(max_percent - min_percent) / (num_levels - 2))
    min_sizes, max_sizes = [], []
    for percent in range(min_percent, max_percent + 1, step):
        min_sizes.append(int(input_size * percent / 100))
        max_sizes.append(int(input_size * (percent + step) / 100))
    first_min, first_max = _FIRST_LEVEL_PERCENT[key]
    min_sizes.insert(0, int(input_size * first_min / 100))
    max_sizes.insert(0, int(input_size * first_max / 100))
    return min_sizes, max_sizes


@TASK_UTILS.register_module()
class SSDAnchorGenerator:
    """SSD default boxes on every feature level, for square inputs of one fixed size.

    Per feature-map location ``(i, j)`` (row ``i``, column ``j``) of level ``l`` the anchors are centred at
    ``((j + 0.5) * stride_l, (i + 0.5) * stride_l)`` in input-image pixels (the centre of the input patch the
    location covers, as in the SSD paper, torchvision and mmdetection), in this order:

    1. a square of side ``min_size_l``;
    2. a square of side ``sqrt(min_size_l * max_size_l)``;
    3. for each ratio ``r`` of the level: a wide box ``w = min_size_l * sqrt(r)``, ``h = min_size_l / sqrt(r)``,
       then the tall box with ``w`` and ``h`` swapped.

    So ``ratios=[2]`` gives 4 anchors per location and ``ratios=[2, 3]`` gives 6. This is the order of the
    original Caffe SSD, torchvision's ``DefaultBoxGenerator`` and mmdetection 2.x, so a head's output channel
    ``a * K + k`` at a location is anchor ``a``'s value ``k``. All anchors of a level are laid out row-major over
    locations, then by anchor: index ``(i * W + j) * A + a``.

    Anchors are not clipped to the image (neither does mmdetection; torchvision clips the normalised sizes to 1).

    Args:
        strides: pixel stride of each level, e.g. ``[8, 16, 32, 64, 100, 300]`` for SSD300.
        ratios: aspect ratios ``r`` of each level, e.g. ``[[2], [2, 3], [2, 3], [2, 3], [2], [2]]``.
        input_size: side of the (square) input the anchors are made for. Feature maps of any other size are
            refused by :meth:`grid_priors`, because the anchor sizes and strides only fit this input.
        basesize_ratio_range: ``(min, max)`` anchor size ratio of levels 1.. (see :func:`ssd_anchor_sizes`);
            used when ``min_sizes``/``max_sizes`` are not given. COCO: ``(0.15, 0.9)`` at 300, ``(0.1, 0.9)`` at
            512; VOC: ``(0.2, 0.9)`` at 300, ``(0.15, 0.9)`` at 512.
        min_sizes: explicit per-level min sizes in pixels (with ``max_sizes``), e.g. for SSDLite-320.
        max_sizes: explicit per-level max sizes in pixels, each larger than its min size.

    Raises:
        ValueError: naming the argument, for lists of different lengths, a max size not above its min size, or a
            ratio range with no published first level.
    """

    def __init__(self, strides: Sequence[int | float], ratios: Sequence[Sequence[float]], *,
                 input_size: int = 300, basesize_ratio_range: Sequence[float] | None = (0.15, 0.9),
                 min_sizes: Sequence[float] | None = None, max_sizes: Sequence[float] | None = None) -> None:
        if len(ratios) != len(strides):
            raise ValueError(f'ratios must give one list per level ({len(strides)} strides), got {len(ratios)}')
        if not isinstance(input_size, int) or input_size <= 0:
            raise ValueError(f'input_size must be a positive int (the side of the square input), got {input_size!r}')
        if (min_sizes is None) != (max_sizes is None):
            raise ValueError('min_sizes and max_sizes must be given together')
        if min_sizes is None:
            if basesize_ratio_range is None:
                raise ValueError('give either basesize_ratio_range or min_sizes and max_sizes')
            min_sizes, max_sizes = ssd_anchor_sizes(input_size, tuple(basesize_ratio_range), len(strides))
        if len(min_sizes) != len(strides) or len(max_sizes) != len(strides):
            raise ValueError(f'min_sizes and max_sizes must have one value per level ({len(strides)}), got '
                             f'{len(min_sizes)} and {len(max_sizes)}')
        for level, (lo, hi) in enumerate(zip(min_sizes, max_sizes)):
            if not 0 < lo < hi:
                raise ValueError(f'max_sizes[{level}]={hi} must be larger than min_sizes[{level}]={lo} > 0')
        for level, level_ratios in enumerate(ratios):
            if any(r <= 0 or r == 1 for r in level_ratios):
                raise ValueError(f'ratios[{level}]={list(level_ratios)} must be positive and not 1 (ratio 1 is '
                                 'always made, at the min and at sqrt(min * max))')

        self.strides = [float(s) for s in strides]
        self.ratios = [[float(r) for r in level_ratios] for level_ratios in ratios]
        self.input_size = input_size
        self.min_sizes = [float(s) for s in min_sizes]
        self.max_sizes = [float(s) for s in max_sizes]
        self.base_anchors = [self._base_anchors(level) for level in range(self.num_levels)]
        self._cache: dict[tuple, list[Tensor]] = {}

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_priors(self) -> list[int]:
        """Anchors per location of each level, e.g. ``[4, 6, 6, 6, 4, 4]`` for SSD300."""
        return [2 + 2 * len(r) for r in self.ratios]

    @property
    def featmap_sizes(self) -> list[tuple[int, int]]:
        """The ``(H, W)`` of each level's feature map for a ``input_size x input_size`` input."""
        return [(math.ceil(self.input_size / s), math.ceil(self.input_size / s)) for s in self.strides]

    def _base_anchors(self, level: int) -> Tensor:
        """``Tensor[A, 4]`` anchors of location ``(0, 0)`` of ``level``, in the documented order."""
        lo, hi = self.min_sizes[level], self.max_sizes[level]
        wh = [(lo, lo), (math.sqrt(lo * hi),) * 2]
        for r in self.ratios[level]:
            wh += [(lo * math.sqrt(r), lo / math.sqrt(r)), (lo / math.sqrt(r), lo * math.sqrt(r))]
        wh = torch.tensor(wh, dtype=torch.float64)  # float64 so the float32 anchors are correctly rounded
        center = self.strides[level] / 2
        return torch.cat([center - 0.5 * wh, center + 0.5 * wh], dim=1)

    def check_featmap_sizes(self, featmap_sizes: Sequence[tuple[int, int]]) -> None:
        """Raise a ValueError naming expected and actual sizes unless ``featmap_sizes`` fit ``input_size``."""
        actual = [tuple(int(v) for v in s) for s in featmap_sizes]
        expected = self.featmap_sizes
        if actual != expected:
            raise ValueError(
                f'{type(self).__name__} was made for {self.input_size}x{self.input_size} inputs and expects feature '
                f'maps of (H, W) sizes {expected}, got {actual}. The images fed to the detector are not '
                f'{self.input_size}x{self.input_size}: resize them with Resize(scale=({self.input_size}, '
                f'{self.input_size}), keep_ratio=False), or use a config whose anchors are made for this input size.')

    def grid_priors(self, featmap_sizes: Sequence[tuple[int, int]], dtype: torch.dtype = torch.float32,
                    device: torch.device | str = 'cpu') -> list[Tensor]:
        """Anchors of every level, in input-image pixels.

        Args:
            featmap_sizes: ``(H, W)`` of each level's feature map; must be :attr:`featmap_sizes`.
            dtype: floating point type of the anchors.
            device: device of the anchors.

        Returns:
            One ``Tensor[H_l * W_l * A_l, 4]`` per level, ``x1, y1, x2, y2``, ordered as in the class docstring.
            They are computed once per device and dtype and shared between calls: do not modify them in place.

        Raises:
            ValueError: when the number of levels or the feature-map sizes do not match the configured input size.
        """
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f'{type(self).__name__} has {self.num_levels} levels (strides {self.strides}) but got '
                             f'{len(featmap_sizes)} feature maps of sizes {list(featmap_sizes)}')
        self.check_featmap_sizes(featmap_sizes)
        key = (torch.device(device), dtype)
        if key not in self._cache:
            self._cache[key] = [self._single_level(level, size, dtype, torch.device(device))
                                for level, size in enumerate(self.featmap_sizes)]
        return self._cache[key]

    def _single_level(self, level: int, featmap_size: tuple[int, int], dtype: torch.dtype,
                      device: torch.device) -> Tensor:
        h, w = featmap_size
        stride = self.strides[level]
        shift_x = torch.arange(w, dtype=torch.float64) * stride
        shift_y = torch.arange(h, dtype=torch.float64) * stride
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing='ij')
        shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)  # (HW, 1, 4), row-major locations
        anchors = (shifts + self.base_anchors[level][None]).reshape(-1, 4)  # (HW * A, 4)
        return anchors.to(device=device, dtype=dtype)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(input_size={self.input_size}, strides={self.strides}, ratios={self.ratios}, '
                f'min_sizes={self.min_sizes}, max_sizes={self.max_sizes})')
