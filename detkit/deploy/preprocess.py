"""A config's test pipeline (Resize, Normalize, Pad) as torch ops on a uint8 BGR image, for export.

The Python pipeline (:func:`detkit.apis.inference.build_test_pipeline`) runs OpenCV on numpy arrays; an exported
graph needs the same steps as tensor operations that ``torch.export`` traces with the image size symbolic. This
module reads the steps from the config into a :class:`PreprocessSpec` and applies them in :func:`preprocess`:

1. the uint8 ``(N, H, W, 3)`` BGR batch becomes float32 ``(N, 3, H, W)``, RGB when ``Normalize(to_rgb=True)``;
2. ``Resize``: bilinear ``F.interpolate(align_corners=False, antialias=False)`` **of the float image** to the config's
   fixed size, or with ``keep_ratio`` to the size :func:`~detkit.datasets.transforms.transforms.rescale_size`
   computes (the same double-precision arithmetic, see :func:`target_size`);
3. ``Normalize``: ``(x - mean) / std``;
4. ``Pad``: bottom and right, with ``pad_val``, to ``size`` or a multiple of ``size_divisor``.

Difference to the Python pipeline: OpenCV's bilinear resize of a float32 image equals step 2 to ~1e-4 grey levels,
but a config that loads uint8 (``LoadImageFromFile()`` without ``to_float32=True``: ``ssd300_coco.py``, the M2Det
and quickstart configs) resizes the uint8 image in OpenCV, which rounds every resized pixel to an integer (up to
0.5 grey levels off). The graph always resizes floats, as the ``_tv`` configs do.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['PreprocessSpec', 'preprocess', 'target_size']

# transforms that carry no pixels: nothing to reproduce in a graph
_IGNORED = ('LoadImageFromFile', 'LoadAnnotations', 'PackDetInputs')


@dataclass(frozen=True)
class PreprocessSpec:
    """What a config's test pipeline does to a uint8 BGR image.

    Attributes:
        scale: ``Resize`` target ``(w, h)``.
        keep_ratio: fit ``scale`` keeping the aspect ratio (else resize to exactly ``scale``).
        size_rounding: ``'half_up'`` or ``'floor'``, how a keep-ratio side becomes whole pixels.
        mean: per-channel mean, in the output's channel order.
        std: per-channel std, same order.
        to_rgb: BGR -> RGB before normalising.
        pad_size: ``Pad(size=(w, h))``, or ``None``.
        pad_size_divisor: ``Pad(size_divisor=d)``, or ``None``.
        pad_val: padding value (of the normalised image).
        resizes_uint8: the Python pipeline resizes the uint8 image (no ``to_float32``); the graph resizes floats.
    """

    scale: tuple[int, int]
    keep_ratio: bool = False
    size_rounding: str = 'half_up'
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    to_rgb: bool = False
    pad_size: tuple[int, int] | None = None
    pad_size_divisor: int | None = None
    pad_val: float = 0.0
    resizes_uint8: bool = True

    @classmethod
    def from_pipeline(cls, steps: Sequence[Mapping[str, Any]], where: str = 'test pipeline') -> PreprocessSpec:
        """Read ``LoadImageFromFile``, ``Resize``, ``Normalize`` and ``Pad`` from a test pipeline's configs.

        Raises:
            ValueError: naming the step, for a transform without a graph equivalent (anything else than these,
                ``LoadAnnotations`` and ``PackDetInputs``), a ``Resize`` by ``scale_factor``, a non-bilinear
                interpolation or a missing ``Resize``.
        """
        args: dict[str, Any] = {}
        seen_resize = False
        for step in steps:
            kind = step.get('type')
            opts = {k: v for k, v in step.items() if k != 'type'}
            if kind == 'LoadImageFromFile':
                args['resizes_uint8'] = not opts.get('to_float32', False)
            elif kind in _IGNORED:
                continue
            elif kind == 'Resize':
                if opts.get('scale') is None:
                    raise ValueError(f'{where}: Resize(scale_factor=...) has no export: the graph needs a target '
                                     f'scale=(w, h), got {dict(step)}')
                if opts.get('interpolation', 'bilinear') != 'bilinear':
                    raise ValueError(f'{where}: only bilinear Resize is exported, got '
                                     f'interpolation={opts["interpolation"]!r}')
                scale = opts['scale']
                scale = (scale, scale) if isinstance(scale, int) else tuple(int(s) for s in scale)
                args.update(scale=scale, keep_ratio=bool(opts.get('keep_ratio', False)),
                            size_rounding=opts.get('size_rounding', 'half_up'))
                seen_resize = True
            elif kind == 'Normalize':
                args.update(mean=tuple(float(m) for m in opts.get('mean', (123.675, 116.28, 103.53))),
                            std=tuple(float(s) for s in opts.get('std', (1.0, 1.0, 1.0))),
                            to_rgb=bool(opts.get('to_rgb', True)))
            elif kind == 'Pad':
                if opts.get('pad_to_square'):
                    raise ValueError(f'{where}: Pad(pad_to_square=True) has no export')
                pad_val = opts.get('pad_val', 0)
                args.update(pad_size=tuple(opts['size']) if opts.get('size') is not None else None,
                            pad_size_divisor=opts.get('size_divisor'),
                            pad_val=float(pad_val.get('img', 0) if isinstance(pad_val, Mapping) else pad_val))
            else:
                raise ValueError(f'{where}: step {kind!r} has no graph equivalent; an exported test pipeline may '
                                 f'hold LoadImageFromFile, Resize, Normalize, Pad, LoadAnnotations, PackDetInputs')
        if not seen_resize:
            raise ValueError(f'{where}: no Resize step; the exported graph needs the input size it resizes to')
        return cls(**args)

    @property
    def fixed_size(self) -> bool:
        """Every image becomes the same network input size (fixed Resize, or Pad to a fixed size)."""
        return not self.keep_ratio or self.pad_size is not None


def target_size(spec: PreprocessSpec, h: Any, w: Any) -> tuple[Any, Any]:
    """``(new_h, new_w)`` that ``Resize`` gives an ``h x w`` image.

    Keep-ratio sizes are computed with the arithmetic of :func:`~detkit.datasets.transforms.transforms.rescale_size`
    (``factor = min(long / max(h, w), short / min(h, w))``, then ``side * factor`` rounded, at least 1), in
    doubles: exactly Python's result for Python ints, and, for the symbolic sizes of ``torch.export``, the same
    operations, which :func:`detkit.deploy.onnx_export.export_onnx` exports in double precision (in float32 the
    floor rounding would put ~6% of short sides one pixel below the Python pipeline's).
    """
    if not spec.keep_ratio:
        return spec.scale[1], spec.scale[0]
    long_edge, short_edge = max(spec.scale), min(spec.scale)
    factor = torch.sym_min(long_edge / torch.sym_max(h, w), short_edge / torch.sym_min(h, w))
    if spec.size_rounding == 'floor':
        new_h, new_w = math.floor(h * factor), math.floor(w * factor)
    else:
        new_h, new_w = math.floor(h * factor + 0.5), math.floor(w * factor + 0.5)
    return torch.sym_max(new_h, 1), torch.sym_max(new_w, 1)  # a side that rounds to 0 px is 1 px


def preprocess(spec: PreprocessSpec, images: Tensor) -> tuple[Tensor, tuple[Any, Any], Tensor]:
    """Apply the test pipeline to a batch of same-size uint8 BGR images.

    Args:
        spec: the pipeline.
        images: ``Tensor[N, H, W, 3]`` uint8, BGR.

    Returns:
        ``(inputs, (new_h, new_w), scale)``: the network input ``Tensor[N, 3, H', W']`` float32 (padded),
        the resized size before padding (the ``img_shape`` to clip boxes to), and ``Tensor[2]`` float32
        ``(sx, sy) = (new_w / w, new_h / h)``, rounded from double precision as ``predict`` rounds the meta's
        ``scale_factor``.
    """
    h, w = images.shape[1], images.shape[2]
    new_h, new_w = target_size(spec, h, w)
    if spec.keep_ratio:
        new_h, new_w = _fresh_sizes(images, (new_h, new_w), max(spec.scale))
    x = images.permute(0, 3, 1, 2).to(torch.float32)  # (N, 3, H, W)
    if spec.to_rgb:
        x = x.flip(1)
    # align_corners=False without antialiasing is OpenCV's INTER_LINEAR (on floats, to ~1e-4 grey levels)
    x = F.interpolate(x, size=(new_h, new_w), mode='bilinear', align_corners=False)
    mean = x.new_tensor(spec.mean).view(1, 3, 1, 1)
    std = x.new_tensor(spec.std).view(1, 3, 1, 1)
    x = (x - mean) / std
    pad_h = pad_w = 0
    if spec.pad_size is not None:
        pad_w, pad_h = spec.pad_size[0] - new_w, spec.pad_size[1] - new_h
    if spec.pad_size_divisor and spec.pad_size is None and isinstance(new_h, torch.SymInt):
        d = spec.pad_size_divisor  # the padded size as d x a fresh size: short expressions for every feature map
        blocks = _fresh_sizes(images, ((new_h + d - 1) // d, (new_w + d - 1) // d), -(-max(spec.scale) // d))
        pad_h, pad_w = d * blocks[0] - new_h, d * blocks[1] - new_w
    elif spec.pad_size_divisor:
        d = spec.pad_size_divisor
        pad_h, pad_w = (d - (new_h + pad_h) % d) % d + pad_h, (d - (new_w + pad_w) % d) % d + pad_w
    if spec.pad_size is not None or spec.pad_size_divisor:
        x = F.pad(x, (0, pad_w, 0, pad_h), value=spec.pad_val)
    # scale factors as the Python pipeline computes them (Python floats), then float32 like predict's new_tensor
    sizes = _shape_tensor(images, (new_w, new_h, w, h)).to(torch.float64)
    scale = (sizes[:2] / sizes[2:]).to(torch.float32)
    return x, (new_h, new_w), scale


def _fresh_sizes(like: Tensor, sizes: tuple[Any, Any], high: int) -> tuple[Any, Any]:
    """``sizes`` unchanged for Python ints; while ``torch.export`` traces (symbolic sizes), the same values as new
    sizes (``Tensor.item()``) known to the tracer only by their range ``[1, high]``.

    The tracer carries every size as an expression of the input's height and width, and checks each shape
    operation against those expressions' ranges. After a keep-ratio resize (min, max and rounding of a double
    product) and padding, the expression of every feature map is deep, and those checks dominate the export time;
    fresh sizes keep the expressions short (docs/design/deploy.md). The graph computes the same numbers either
    way.
    """
    if not any(isinstance(v, torch.SymInt) for v in sizes):
        return sizes
    values = _shape_tensor(like, sizes)
    fresh = tuple(values[i].item() for i in range(len(sizes)))
    for v in fresh:
        torch._check(v >= 1)
        torch._check(v <= high)
    return fresh  # type: ignore[return-value]


def _shape_tensor(like: Tensor, values: Sequence[Any]) -> Tensor:
    """``Tensor[len(values)]`` int64 of (possibly symbolic) sizes, built without Python-float arithmetic."""
    return torch.stack([torch.ones((), dtype=torch.int64, device=like.device) * v for v in values])
