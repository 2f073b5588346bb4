"""Fast CPU inference modes: ``init_detector(..., fast='exact' | 'bf16')``, ``tools/test.py --fast``,
``tools/demo.py --fast``.

:func:`make_fast` changes a detector in eval mode, in place; inputs and outputs stay those of
:meth:`~detkit.models.detectors.SingleStageDetector.predict` (boxes x1, y1, x2, y2 in input-image pixels or, with
``rescale``, original-image pixels; float32 boxes and scores, int64 labels):

* ``'exact'``: every batch norm that directly follows a conv is folded into it (:func:`fold_batch_norms`, eval
  statistics) and the network runs in channels-last (NHWC) layout. The same arithmetic up to float rounding: the same
  detections (count, labels and order; boxes and scores within float tolerance, ``tests/apis/test_fast.py``).
* ``'bf16'``: ``'exact'`` plus the network under ``torch.autocast(dtype=torch.bfloat16)``; its outputs are cast
  back to float32, so decoding and NMS run as usual. Not exact: bfloat16 keeps 8 bits of mantissa, so scores move
  by ~1e-2 and boxes by pixels. Fast only on CPUs with native bfloat16 (AMX / AVX512-BF16).

Speeds are in BENCHMARKS.md ("End-to-end inference"); the design and the measured agreement in
docs/design/deploy.md.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ['FAST_MODES', 'fold_batch_norms', 'make_fast']

FAST_MODES = ('exact', 'bf16')


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """``bn(conv(x))`` as one conv (torch's ``fuse_conv_bn_weights``, fed float64 so the result is rounded once)."""
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    weight, new_bias = fuse_conv_bn_weights(conv.weight.double(), bias.double(), bn.running_mean.double(),
                                            bn.running_var.double(), bn.eps, bn.weight.double(), bn.bias.double())
    with torch.no_grad():
        conv.weight.copy_(weight.to(conv.weight.dtype))
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias.detach().to(conv.weight.dtype))
        else:
            conv.bias.copy_(new_bias)


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` into it, in place.

    The pairs are those detkit's modules apply one after the other: consecutive children of an ``nn.Sequential``
    (``ConvNormAct``, ResNet's downsample) and attributes named ``conv``/``bn`` or ``convK``/``bnK`` (ResNet's stem and
    blocks). The batch norm becomes an ``nn.Identity``. Call it on a model in eval mode only: training would need
    the batch statistics.

    Returns:
        The number of batch norms folded.
    """
    folded = 0
    for module in list(model.modules()):
        pairs: list[tuple[str, nn.Module, str, nn.Module]] = []
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            pairs += [(a, ma, b, mb) for (a, ma), (b, mb) in zip(children, children[1:])]
        for name, child in module.named_children():
            if name == 'conv' or (name.startswith('conv') and name[4:].isdigit()):
                bn_name = 'bn' + name[4:]
                if hasattr(module, bn_name):
                    pairs.append((name, child, bn_name, getattr(module, bn_name)))
        for _, conv, bn_name, bn in pairs:
            if getattr(module, bn_name) is not bn:  # ConvNormAct matches both rules: fold once
                continue
            if (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats
                    and not bn.training and bn.running_var is not None):
                _fold(conv, bn)
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded


def make_fast(model: nn.Module, mode: str) -> nn.Module:
    """Switch a detector (in eval mode) to a fast inference mode, in place; see the module docstring.

    Args:
        model: a :class:`~detkit.models.detectors.SingleStageDetector` in eval mode.
        mode: ``'exact'`` or ``'bf16'``.

    Returns:
        ``model``.

    Raises:
        ValueError: an unknown mode, or a model in training mode.
    """
    if mode not in FAST_MODES:
        raise ValueError(f'fast must be one of {FAST_MODES} (or None), got {mode!r}')
    if model.training:
        raise ValueError('fast inference folds the batch norms: call model.eval() first')
    fold_batch_norms(model)
    model.channels_last = True
    model.to(memory_format=torch.channels_last)
    if mode == 'bf16':
        model.autocast_dtype = torch.bfloat16
    return model
