"""Build-time check that a detector's backbone, neck and anchors fit together (levels, sizes, strides).

Swapping a backbone or a neck in a config is the point of the registry, and the usual way it goes wrong is a
backbone whose outputs have other strides than the anchors were laid out for. Without this check that fails at the
first batch, deep inside a convolution ("Kernel size can't be greater than actual input size") or in the anchor
generator ("expects feature maps of (38, 38) ..., got (19, 19)"), and the message blames the input size. Here the
network runs once when it is built, on shape-only tensors (``FakeTensorMode``: no arithmetic, no memory), and a
mismatch is an error that names the levels, sizes and strides on both sides and, when the backbone can say which
outputs have which strides, the ``out_indices`` that would fit.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ['check_feature_maps']


def _probe_size(generator: Any, input_size: Sequence[int] | None) -> tuple[int, int]:
    if input_size is not None and input_size is not True:
        hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        return int(hw[0]), int(hw[1])
    size = getattr(generator, 'input_size', None)
    if size is not None:
        return (size, size) if isinstance(size, int) else tuple(size)
    # anchors for any input: a size that every stride divides (640 for RetinaNet's 8..128), so that
    # ceil(size / stride) is exactly what strided convolutions give
    largest = max(generator.strides)
    return (int(5 * largest),) * 2


def _describe_backbone(backbone: nn.Module) -> str:
    parts = [type(backbone).__name__]
    out_indices = getattr(backbone, 'out_indices', None)
    if out_indices is not None:
        parts.append(f'out_indices={tuple(out_indices)}')
    strides = getattr(backbone, 'out_strides', None)
    if strides is not None:
        parts.append(f'output strides {tuple(strides)}')
    channels = getattr(backbone, 'out_channels', None)
    if channels is not None:
        parts.append(f'channels {tuple(channels)}')
    return ' '.join(parts[:1]) + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else '')


def _suggest_out_indices(backbone: nn.Module, factor: float) -> str:
    """``out_indices`` of ``backbone`` whose strides are its current ones divided by ``factor``, if any."""
    index_strides = getattr(backbone, 'index_strides', None)
    strides = getattr(backbone, 'out_strides', None)
    if not index_strides or strides is None or factor == 1:
        return ''
    wanted = [s / factor for s in strides]
    chosen = []
    for s in wanted:
        # the deepest index with that stride: the most processed features at that resolution
        candidates = [i for i, st in index_strides.items() if st == s]
        if not candidates:
            return ''
        chosen.append(max(candidates))
    if chosen != sorted(set(chosen)):
        return ''
    listing = ', '.join(f'{i}: {s}' for i, s in sorted(index_strides.items()))
    return (f' out_indices={tuple(chosen)} would give the strides {tuple(int(w) for w in wanted)} that fit '
            f'({type(backbone).__name__} strides by out index: {listing}).')


def check_feature_maps(detector: nn.Module, input_size: Sequence[int] | int | None = None) -> None:
    """Run ``detector``'s backbone and neck on a shape-only ``(1, 3, h, w)`` input; raise when the feature maps do
    not match what its head's anchors expect.

    Args:
        detector: a :class:`~detkit.models.detectors.SingleStageDetector` (``backbone``, ``neck``, ``bbox_head``
            with an ``anchor_generator``).
        input_size: ``(h, w)`` or a side to probe at; default the anchors' input size, else ``5 x`` the largest
            anchor stride.

    Raises:
        ValueError: naming the levels, feature-map sizes and strides of the network and of the anchors, and the
            backbone ``out_indices`` that would fit when the backbone describes its strides.
    """
    from torch._subclasses.fake_tensor import DynamicOutputShapeException, FakeTensorMode, UnsupportedOperatorException

    generator = getattr(detector.bbox_head, 'anchor_generator', None)
    if generator is None or not hasattr(generator, 'featmap_sizes_for'):
        return
    h, w = _probe_size(generator, input_size)
    expected = generator.featmap_sizes_for((h, w))
    exp_strides = [int(s) if float(s).is_integer() else s for s in generator.strides]
    anchors = (f'the anchors ({type(generator).__name__}) expect {len(expected)} levels of sizes {expected} '
               f'(strides {exp_strides})')
    backbone, neck = detector.backbone, detector.neck
    was_training = detector.training
    detector.eval()  # batch norm in training mode would update running statistics (and refuses 1x1 maps)
    try:
        with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True):
            x = torch.empty(1, 3, h, w)
            try:
                feats = backbone(x)
            except (UnsupportedOperatorException, DynamicOutputShapeException):
                return  # an op the shape-only mode cannot run: no check rather than a false alarm
            except RuntimeError as err:
                raise ValueError(f'{_describe_backbone(backbone)} cannot run on a {w}x{h} input: '
                                 f'{str(err).splitlines()[0]}') from None
            backbone_sizes = [tuple(int(v) for v in f.shape[-2:]) for f in feats]
            if neck is not None:
                try:
                    feats = neck(feats)
                except (UnsupportedOperatorException, DynamicOutputShapeException):
                    return
                except (RuntimeError, ValueError) as err:
                    raise ValueError(
                        f'{type(neck).__name__} cannot run on the outputs of {_describe_backbone(backbone)} at a '
                        f'{w}x{h} input (sizes {backbone_sizes}): {str(err).splitlines()[0]}. At this input {anchors}.'
                        + _suggest(backbone, backbone_sizes[0][0], expected[0][0], h)) from None
            actual = [tuple(int(v) for v in f.shape[-2:]) for f in feats]
    finally:
        detector.train(was_training)
    if actual == expected:
        return
    act_strides = [_stride(h, size[0]) for size in actual]
    where = f'{_describe_backbone(backbone)}' + (f' + {type(neck).__name__}' if neck is not None else '')
    msg = (f'{where} gives {len(actual)} feature maps at a {w}x{h} input, of sizes {actual} (strides about '
           f'{act_strides}), but {anchors}.')
    if len(actual) != len(expected):
        msg += (' The number of levels differs: change the neck (its extra levels / num_outs) or the anchor '
                'generator\'s strides so that they agree.')
    msg += _suggest(backbone, actual[0][0], expected[0][0], h)
    raise ValueError(msg)


def _stride(input_side: int, feature_side: int) -> int:
    """The stride that gave a ``feature_side`` map from an ``input_side`` input (``ceil(input / stride)``): the power
    of two that does so when there is one, else the ratio rounded."""
    lo, hi = input_side / feature_side, input_side / (feature_side - 1) if feature_side > 1 else math.inf
    power = 2 ** math.ceil(math.log2(lo)) if lo > 0 else 1
    return int(power) if power <= hi else int(round(lo))


def _suggest(backbone: nn.Module, actual_side: int, expected_side: int, h: int) -> str:
    """A hint from the first level of the network against the first anchor level: when their strides differ by a
    power of two, the backbone ``out_indices`` whose strides differ from the current ones by that factor."""
    if actual_side <= 0 or expected_side <= 0:
        return ''
    factor = _stride(h, actual_side) / _stride(h, expected_side)
    power = round(math.log2(factor)) if factor > 0 else 0
    if power == 0 or abs(factor - 2 ** power) > 0.15 * factor:
        return ''
    hint = _suggest_out_indices(backbone, 2 ** power)
    direction = 'coarser' if power > 0 else 'finer'
    return f' The first feature level is {2 ** abs(power)}x {direction} than the first anchor level.' + hint
