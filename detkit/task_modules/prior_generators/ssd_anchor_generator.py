"""SSD's default boxes (and M2Det's): an :class:`AnchorGenerator` configuration for one fixed, square input."""
from __future__ import annotations

import math
from collections.abc import Sequence

from detkit.registry import TASK_UTILS

from .anchor_generator import AnchorGenerator

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
class SSDAnchorGenerator(AnchorGenerator):
    """SSD default boxes on every feature level, for square inputs of one fixed size.

    An :class:`AnchorGenerator` with ``center_offset=0.5`` and explicit sizes: per feature-map location ``(i, j)``
    of level ``l`` the anchors are centred at ``((j + 0.5) * stride_l, (i + 0.5) * stride_l)`` in input-image
    pixels (the centre of the input patch the location covers, as in the SSD paper, torchvision and mmdetection),
    in this order:

    1. a square of side ``min_size_l``;
    2. a square of side ``sqrt(min_size_l * max_size_l)``;
    3. for each ratio ``r`` of the level: a wide box ``w = min_size_l * sqrt(r)``, ``h = min_size_l / sqrt(r)``,
       then the tall box with ``w`` and ``h`` swapped.

    So ``ratios=[2]`` gives 4 anchors per location and ``ratios=[2, 3]`` gives 6. This is the order of the
    original Caffe SSD, torchvision's ``DefaultBoxGenerator``, mmdetection 2.x and M2Det's ``PriorBox``.

    The sizes come from one of three spellings:

    * ``basesize_ratio_range`` (mmdetection's SSD configs; see :func:`ssd_anchor_sizes`);
    * ``min_sizes`` and ``max_sizes`` in pixels (SSDLite);
    * ``size_pattern``: ``num_levels + 1`` fractions of the input size, level ``l`` spanning ``pattern[l]`` to
      ``pattern[l + 1]`` (M2Det's configs; the pixel sizes are rounded to 2 decimals as M2Det's ``get_scales``
      does, e.g. ``[0.08, 0.15, ...]`` at 320 gives min sizes ``25.6, 48.0, ...``).

    Anchors are not clipped unless ``clip_size``: then each anchor's width and height are clamped to the input
    size, as M2Det's (and SSD.pytorch's and torchvision's) ``clip=True`` does.

    Args:
        strides: pixel stride of each level, e.g. ``[8, 16, 32, 64, 100, 300]`` for SSD300.
        ratios: aspect ratios ``r`` of each level, e.g. ``[[2], [2, 3], [2, 3], [2, 3], [2], [2]]``.
        input_size: side of the (square) input the anchors are made for. Feature maps of any other size are
            refused by :meth:`grid_priors`, because the anchor sizes and strides only fit this input.
        basesize_ratio_range: ``(min, max)`` anchor size ratio of levels 1.. (see :func:`ssd_anchor_sizes`);
            used when neither ``min_sizes``/``max_sizes`` nor ``size_pattern`` are given. COCO: ``(0.15, 0.9)`` at
            300, ``(0.1, 0.9)`` at 512; VOC: ``(0.2, 0.9)`` at 300, ``(0.15, 0.9)`` at 512.
        min_sizes: explicit per-level min sizes in pixels (with ``max_sizes``), e.g. for SSDLite-320.
        max_sizes: explicit per-level max sizes in pixels, each larger than its min size.
        size_pattern: M2Det's sizes as fractions of ``input_size`` (``num_levels + 1`` increasing values).
        clip_size: clamp anchor widths and heights to ``input_size``.

    Raises:
        ValueError: naming the argument, for lists of different lengths, a max size not above its min size, or a
            ratio range with no published first level.
    """

    def __init__(self, strides: Sequence[int | float], ratios: Sequence[Sequence[float]], *,
                 input_size: int = 300, basesize_ratio_range: Sequence[float] | None = (0.15, 0.9),
                 min_sizes: Sequence[float] | None = None, max_sizes: Sequence[float] | None = None,
                 size_pattern: Sequence[float] | None = None, clip_size: bool = False) -> None:
        if len(ratios) != len(strides):
            raise ValueError(f'ratios must give one list per level ({len(strides)} strides), got {len(ratios)}')
        if not isinstance(input_size, int) or input_size <= 0:
            raise ValueError(f'input_size must be a positive int (the side of the square input), got {input_size!r}')
        if (min_sizes is None) != (max_sizes is None):
            raise ValueError('min_sizes and max_sizes must be given together')
        if size_pattern is not None:
            if min_sizes is not None:
                raise ValueError('give either size_pattern or min_sizes and max_sizes, not both')
            if len(size_pattern) != len(strides) + 1:
                raise ValueError(f'size_pattern must have num_levels + 1 = {len(strides) + 1} values, got '
                                 f'{list(size_pattern)}')
            sizes = [round(p * input_size, 2) for p in size_pattern]  # M2Det's get_scales
            min_sizes, max_sizes = sizes[:-1], sizes[1:]
        if min_sizes is None:
            if basesize_ratio_range is None:
                raise ValueError('give either basesize_ratio_range, min_sizes and max_sizes, or size_pattern')
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
        self.min_sizes = [float(s) for s in min_sizes]
        self.max_sizes = [float(s) for s in max_sizes]
        self.level_ratios = [[float(r) for r in level_ratios] for level_ratios in ratios]
        self.clip_size = bool(clip_size)
        sizes = []
        for lo, hi, level_ratios in zip(self.min_sizes, self.max_sizes, self.level_ratios):
            wh = [(lo, lo), (math.sqrt(lo * hi),) * 2]
            for r in level_ratios:
                wh += [(lo * math.sqrt(r), lo / math.sqrt(r)), (lo / math.sqrt(r), lo * math.sqrt(r))]
            if self.clip_size:
                wh = [(min(w, input_size), min(h, input_size)) for w, h in wh]
            sizes.append(wh)
        super().__init__(strides, sizes=sizes, center_offset=0.5, input_size=input_size)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(input_size={self.input_size}, strides={self.strides}, '
                f'ratios={self.level_ratios}, min_sizes={self.min_sizes}, max_sizes={self.max_sizes}, '
                f'clip_size={self.clip_size})')
