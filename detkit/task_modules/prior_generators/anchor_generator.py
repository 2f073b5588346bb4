"""Anchors on the grid of every feature level, for any input size: RetinaNet's, and SSD's and M2Det's as sizes."""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor

from detkit.registry import TASK_UTILS

__all__ = ['AnchorGenerator']

#: distinct (feature-map sizes, device, dtype) keys whose anchors are kept; keep-ratio inputs give a few sizes
_CACHE_SIZE = 32


@TASK_UTILS.register_module()
class AnchorGenerator:
    """Anchors (priors) at every location of every feature level.

    Location ``(i, j)`` (row ``i``, column ``j``) of level ``l`` centres its anchors at
    ``((j + center_offset) * stride_l, (i + center_offset) * stride_l)`` in input-image pixels: ``center_offset=0``
    is mmdetection's and torchvision's RetinaNet (the top-left corner of the cell), ``0.5`` SSD's and M2Det's (the
    centre of the input patch the cell covers). Each location has the level's base anchors, given either

    * as ``ratios`` x ``scales`` of a base size (RetinaNet): for each ratio ``r = h / w`` (outer loop) and scale
      ``s`` (inner loop), ``w = base * s / sqrt(r)`` and ``h = base * s * sqrt(r)``, mmdetection's and
      torchvision's order; ``scales`` may be given directly or as ``octave_base_scale * 2 ** (k /
      scales_per_octave)`` for ``k < scales_per_octave`` (RetinaNet: 4 and 3, i.e. 32, 40.3 and 50.8 pixels at
      stride 8); the base size of a level defaults to its stride;
    * or as explicit ``sizes``: one list of ``(w, h)`` pairs per level (SSD and M2Det, see
      :class:`~detkit.task_modules.SSDAnchorGenerator`).

    All anchors of a level are laid out row-major over locations, then by base anchor: index
    ``(i * W + j) * A + a``, so channel ``a * K + k`` of a head's conv output is value ``k`` of anchor ``a``.

    The anchors of any set of feature-map sizes are computed on demand (in float64, then rounded once to the
    requested dtype) and cached per ``(sizes, device, dtype)``.

    Args:
        strides: pixel stride of each level, e.g. ``[8, 16, 32, 64, 128]`` for RetinaNet.
        ratios: aspect ratios ``h / w``, shared by all levels (``[0.5, 1.0, 2.0]`` for RetinaNet).
        scales: anchor sizes as multiples of the level's base size (with ``ratios``).
        octave_base_scale: with ``scales_per_octave``, the scales ``octave_base_scale * 2 ** (k / n)``.
        scales_per_octave: ``n`` above.
        base_sizes: base size of each level in pixels; default the strides.
        sizes: explicit base anchors, ``sizes[l] = [(w, h), ...]`` in pixels; exclusive with ratios/scales.
        center_offset: anchor centres in units of the stride from the cell's top-left corner, in ``[0, 1)``.
        input_size: the one input size these anchors are made for (``int`` for a square, or ``(h, w)``), when they
            are tied to it (SSD, M2Det): feature maps of other sizes are then refused with a message naming the
            expected and actual sizes. ``None`` accepts any size.
        size_rounding: ``'floor'`` truncates each anchor size ``base * scale`` to whole pixels before the ratios
            are applied, as torchvision's RetinaNet does (``int(32 * 2 ** (1 / 3))``: sizes 32, 40, 50 at stride 8
            instead of 32, 40.3, 50.8); ``None`` keeps them exact (mmdetection). With ``ratios`` only.
        round_base_anchors: round the corners of each base anchor, centred on its location, to whole pixels (half
            to even, as ``torch.round``): torchvision's ``AnchorGenerator`` (``base_anchors.round()``), whose
            ratio-0.5 anchor of size 32 spans -23 .. 23 by -11 .. 11 rather than -22.6 .. 22.6 by -11.3 .. 11.3.
        strides_from_input: take each level's stride, per axis, as the input size floor-divided by the level's
            feature-map size (torchvision's ``image_size // grid_size``) instead of ``strides``. The input size is
            the first level's feature-map size times its stride, exact when that stride divides the (padded)
            input, as with ``Pad(size_divisor=32)``. This reproduces a torchvision quirk: at an 800x1088 input the
            13x17 P6 map gets strides 61 (y) and 64 (x), and its anchors drift from the grid they should sit on
            whenever the input is not a multiple of the largest stride.

    Raises:
        ValueError: naming the argument, for inconsistent lengths, non-positive sizes or strides, or both or
            neither of the two ways of giving sizes.
    """

    def __init__(self, strides: Sequence[float], ratios: Sequence[float] | None = None,
                 scales: Sequence[float] | None = None, octave_base_scale: float | None = None,
                 scales_per_octave: int | None = None, base_sizes: Sequence[float] | None = None,
                 sizes: Sequence[Sequence[Sequence[float]]] | None = None, center_offset: float = 0.0,
                 input_size: int | Sequence[int] | None = None, size_rounding: str | None = None,
                 round_base_anchors: bool = False, strides_from_input: bool = False) -> None:
        name = type(self).__name__
        if not strides or any(not s > 0 for s in strides):
            raise ValueError(f'{name}: strides must be positive numbers, one per level, got {list(strides)}')
        self.strides = [float(s) for s in strides]
        if not 0 <= center_offset < 1:
            raise ValueError(f'{name}: center_offset must be in [0, 1) (units of the stride), got {center_offset}')
        self.center_offset = float(center_offset)
        if size_rounding not in (None, 'floor'):
            raise ValueError(f"{name}: size_rounding must be None or 'floor', got {size_rounding!r}")
        if size_rounding is not None and sizes is not None:
            raise ValueError(f'{name}: size_rounding applies to sizes made from ratios and scales, not to explicit '
                             'sizes (round those in the config)')
        self.size_rounding = size_rounding
        self.round_base_anchors = bool(round_base_anchors)
        self.strides_from_input = bool(strides_from_input)
        if self.strides_from_input and input_size is not None:
            raise ValueError(f'{name}: strides_from_input is for anchors that fit any input size; with a fixed '
                             f'input_size ({input_size!r}) give the strides themselves')
        if sizes is not None:
            if ratios is not None or scales is not None or octave_base_scale is not None or base_sizes is not None:
                raise ValueError(f'{name}: give either sizes or ratios with scales (or octave_base_scale), not both')
            if len(sizes) != len(strides):
                raise ValueError(f'{name}: sizes must give one list of (w, h) per level ({len(strides)} strides), '
                                 f'got {len(sizes)}')
            wh = []
            for level, level_sizes in enumerate(sizes):
                pairs = [tuple(float(v) for v in pair) for pair in level_sizes]
                if not pairs or any(len(p) != 2 or not (p[0] > 0 and p[1] > 0) for p in pairs):
                    raise ValueError(f'{name}: sizes[{level}] must be a non-empty list of positive (w, h) pairs, '
                                     f'got {list(level_sizes)}')
                wh.append(pairs)
        else:
            wh, scales = self._sizes_from_ratios(name, ratios, scales, octave_base_scale, scales_per_octave,
                                                 base_sizes)
        #: base anchor (w, h) pairs of each level, in the order of the anchors at a location
        self.base_wh: list[list[tuple[float, float]]] = wh
        self.ratios = None if sizes is not None else [float(r) for r in ratios]
        self.scales = None if sizes is not None else scales
        if input_size is not None:
            hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
            if len(hw) != 2 or any(not isinstance(v, int) or v <= 0 for v in hw):
                raise ValueError(f'{name}: input_size must be a positive int or (h, w), got {input_size!r}')
            self.input_size: int | tuple[int, int] | None = input_size if isinstance(input_size, int) else hw
        else:
            self.input_size = None
        self.base_anchors = [self._base_anchors(level) for level in range(self.num_levels)]
        self._cache: OrderedDict[tuple, list[Tensor]] = OrderedDict()

    def _sizes_from_ratios(self, name: str, ratios: Sequence[float] | None, scales: Sequence[float] | None,
                           octave_base_scale: float | None, scales_per_octave: int | None,
                           base_sizes: Sequence[float] | None) -> tuple[list[list[tuple[float, float]]], list[float]]:
        if ratios is None or not len(ratios) or any(not r > 0 for r in ratios):
            raise ValueError(f'{name}: ratios (h / w) must be a non-empty list of positive numbers, got {ratios!r}; '
                             'or give explicit sizes')
        octave = octave_base_scale is not None or scales_per_octave is not None
        if (scales is not None) == octave:
            raise ValueError(f'{name}: give either scales or octave_base_scale with scales_per_octave')
        if octave:
            if octave_base_scale is None or scales_per_octave is None or scales_per_octave < 1:
                raise ValueError(f'{name}: octave_base_scale and scales_per_octave (>= 1) go together, got '
                                 f'{octave_base_scale!r} and {scales_per_octave!r}')
            scales = [octave_base_scale * 2 ** (k / scales_per_octave) for k in range(scales_per_octave)]
        if not scales or any(not s > 0 for s in scales):
            raise ValueError(f'{name}: scales must be positive, got {list(scales)}')
        scales = [float(s) for s in scales]
        if base_sizes is None:
            base_sizes = self.strides
        if len(base_sizes) != len(self.strides) or any(not b > 0 for b in base_sizes):
            raise ValueError(f'{name}: base_sizes must give one positive size per level ({len(self.strides)}), got '
                             f'{list(base_sizes)}')
        wh = []
        for base in base_sizes:
            sizes = [base * s for s in scales]
            if self.size_rounding == 'floor':
                sizes = [float(math.floor(size)) for size in sizes]
            # ratio-major, scale-minor: the order of mmdetection (scale_major=True) and torchvision
            wh.append([(size / math.sqrt(r), size * math.sqrt(r)) for r in ratios for size in sizes])
        return wh, scales

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_priors(self) -> list[int]:
        """Anchors per location of each level, e.g. ``[9, 9, 9, 9, 9]`` for RetinaNet."""
        return [len(wh) for wh in self.base_wh]

    def featmap_sizes_for(self, input_hw: tuple[int, int]) -> list[tuple[int, int]]:
        """``ceil(input / stride)`` per level: the feature-map sizes of a network whose levels have these strides
        (exact for strided convs with "same" padding, and for any input that the largest stride divides)."""
        h, w = input_hw
        return [(math.ceil(h / s), math.ceil(w / s)) for s in self.strides]

    @property
    def featmap_sizes(self) -> list[tuple[int, int]]:
        """The ``(H, W)`` of each level's feature map for :attr:`input_size` (only when it is set)."""
        if self.input_size is None:
            raise AttributeError(f'{type(self).__name__} has no input_size: its anchors fit any feature-map size')
        hw = (self.input_size,) * 2 if isinstance(self.input_size, int) else self.input_size
        return self.featmap_sizes_for(hw)

    def _base_anchors(self, level: int) -> Tensor:
        """``Tensor[A, 4]`` anchors of location ``(0, 0)`` of ``level``, in the documented order (float64, so that
        the anchors are rounded once, to the dtype asked for)."""
        wh = torch.tensor(self.base_wh[level], dtype=torch.float64)
        if self.round_base_anchors:
            # torchvision rounds the anchor centred on 0 and shifts it by whole strides afterwards
            return torch.cat([-0.5 * wh, 0.5 * wh], dim=1).round() + self.center_offset * self.strides[level]
        center = self.center_offset * self.strides[level]
        return torch.cat([center - 0.5 * wh, center + 0.5 * wh], dim=1)

    def check_featmap_sizes(self, featmap_sizes: Sequence[tuple[int, int]]) -> None:
        """Raise a ``ValueError`` naming the expected and actual sizes when the level count differs or, with an
        ``input_size``, the feature maps are not that input's."""
        actual = [tuple(int(v) for v in s) for s in featmap_sizes]
        name = type(self).__name__
        if len(actual) != self.num_levels:
            raise ValueError(f'{name} has {self.num_levels} levels (strides {_fmt(self.strides)}) but got '
                             f'{len(actual)} feature maps of sizes {actual}')
        if self.input_size is None:
            return
        expected = self.featmap_sizes
        if actual != expected:
            h, w = (self.input_size,) * 2 if isinstance(self.input_size, int) else self.input_size
            raise ValueError(
                f'{name} was made for {w}x{h} inputs and expects feature maps of (H, W) sizes {expected}, got '
                f'{actual}. The images fed to the detector are not {w}x{h}: resize them with Resize(scale=({w}, '
                f'{h}), keep_ratio=False), or use a config whose anchors are made for this input size.')

    def grid_priors(self, featmap_sizes: Sequence[tuple[int, int]], dtype: torch.dtype = torch.float32,
                    device: torch.device | str = 'cpu') -> list[Tensor]:
        """Anchors of every level, in input-image pixels.

        Args:
            featmap_sizes: ``(H, W)`` of each level's feature map.
            dtype: floating point type of the anchors.
            device: device of the anchors.

        Returns:
            One ``Tensor[H_l * W_l * A_l, 4]`` per level, ``x1, y1, x2, y2``, ordered as in the class docstring.
            They are cached and shared between calls: do not modify them in place.

        Raises:
            ValueError: when the number of levels differs, or the sizes do not fit ``input_size`` (when set).
        """
        sizes = tuple(tuple(int(v) for v in s) for s in featmap_sizes)
        key = (sizes, torch.device(device), dtype)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        self.check_featmap_sizes(sizes)
        strides = self._grid_strides(sizes)
        anchors = [self._single_level(level, size, stride, dtype, torch.device(device))
                   for level, (size, stride) in enumerate(zip(sizes, strides))]
        self._cache[key] = anchors
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return anchors

    def _grid_strides(self, featmap_sizes: Sequence[tuple[int, int]]) -> list[tuple[float, float]]:
        """``(stride_y, stride_x)`` of every level's grid: ``strides``, or with ``strides_from_input`` the input
        size (level 0's map times its stride) floor-divided by each level's map size."""
        if not self.strides_from_input:
            return [(s, s) for s in self.strides]
        (h0, w0), s0 = featmap_sizes[0], self.strides[0]
        input_h, input_w = int(h0 * s0), int(w0 * s0)
        return [(float(input_h // h), float(input_w // w)) for h, w in featmap_sizes]

    def _single_level(self, level: int, featmap_size: tuple[int, int], stride: tuple[float, float],
                      dtype: torch.dtype, device: torch.device) -> Tensor:
        h, w = featmap_size
        shift_x = torch.arange(w, dtype=torch.float64) * stride[1]
        shift_y = torch.arange(h, dtype=torch.float64) * stride[0]
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing='ij')
        shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)  # (HW, 1, 4), row-major locations
        anchors = (shifts + self.base_anchors[level][None]).reshape(-1, 4)  # (HW * A, 4)
        return anchors.to(device=device, dtype=dtype)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(strides={_fmt(self.strides)}, anchors per location={self.num_base_priors}, '
                f'center_offset={self.center_offset}, input_size={self.input_size})')


def _fmt(values: Sequence[float]) -> list:
    """Floats that are whole numbers printed as ints (strides read better as [8, 16, 32])."""
    return [int(v) if float(v).is_integer() else v for v in values]
