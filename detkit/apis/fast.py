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
import torch.fx
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


def _foldable(bn: nn.Module) -> bool:
    return (type(bn) is nn.BatchNorm2d and bn.track_running_stats and not bn.training
            and bn.running_var is not None)


def _only_module_user(node: torch.fx.Node) -> str | None:
    """The module path of ``node``'s only user, if that user is a module call; else ``None``."""
    users = list(node.users)
    return users[0].target if len(users) == 1 and users[0].op == 'call_module' else None


def _traced_pairs(root: nn.Module) -> list[tuple[str, str]] | None:
    """``(conv, bn)`` paths (relative to ``root``) that ``root``'s forward always applies one right after the other,
    from its ``torch.fx`` graph; ``None`` where ``root`` cannot be traced (no ``forward``, control flow on tensors).

    A pair is proven sequential when every call of the conv feeds its output to the batch norm alone and every call
    of the batch norm takes a call of that conv as its only input.
    """
    try:
        graph = torch.fx.Tracer().trace(root)
    except Exception:  # noqa: BLE001 - any failure means "not traceable": the caller traces the children instead
        return None
    calls: dict[str, list[torch.fx.Node]] = {}
    for node in graph.nodes:
        if node.op == 'call_module':
            calls.setdefault(node.target, []).append(node)
    pairs = []
    for bn_path, bn_calls in calls.items():
        if not _foldable(root.get_submodule(bn_path)):
            continue
        inputs = {call.args[0] for call in bn_calls if len(call.args) == 1 and not call.kwargs}
        if len(inputs) != len(bn_calls) or not all(isinstance(i, torch.fx.Node) and i.op == 'call_module'
                                                   for i in inputs):
            continue  # some call reads something else, or two calls read the same output
        conv_paths = {i.target for i in inputs}
        if len(conv_paths) != 1:
            continue
        conv_path = conv_paths.pop()
        if (isinstance(root.get_submodule(conv_path), nn.Conv2d)
                and all(_only_module_user(call) == bn_path for call in calls[conv_path])):
            pairs.append((conv_path, bn_path))
    return pairs


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` that is proven to directly follow a ``Conv2d`` into it, in place.

    The pairs come from the ``torch.fx`` graph of the module that applies them: the whole model where it traces,
    else each child that traces (a backbone, a ResNet block, a ``ConvNormAct``), recursively. A pair is folded only
    where every call of the conv feeds the batch norm alone and the batch norm reads nothing else; a batch norm
    applied before a conv (a pre-activation block), after anything else, or inside a module that does not trace
    and has no traceable child holding both, stays as it is. A folded batch norm becomes an ``nn.Identity``. Call
    it on a model in eval mode only: training would need the batch statistics.

    Returns:
        The number of batch norms folded.
    """
    parents: dict[int, set[int]] = {}  # module -> the modules holding it as a child (shared modules have several)
    for module in model.modules():
        for child in module.children():
            parents.setdefault(id(child), set()).add(id(module))
    folded = 0

    def visit(root: nn.Module) -> None:
        nonlocal folded
        if not any(_foldable(m) for m in root.modules()):
            return
        pairs = _traced_pairs(root)
        if pairs is None:
            for child in root.children():
                visit(child)
            return
        inside = {id(m) for m in root.modules()}
        for conv_path, bn_path in pairs:
            conv, bn = root.get_submodule(conv_path), root.get_submodule(bn_path)
            if not parents[id(conv)] | parents[id(bn)] <= inside:  # also called from outside the traced graph
                continue
            _fold(conv, bn)
            parent, _, name = bn_path.rpartition('.')
            setattr(root.get_submodule(parent), name, nn.Identity())
            folded += 1

    visit(model)
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
