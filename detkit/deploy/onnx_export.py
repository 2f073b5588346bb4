"""Export a detector, its pre-processing and its post-processing to ONNX (``torch.onnx.export``, dynamo).

``onnx`` and ``onnxruntime`` (and ``onnxscript``, which torch's exporter uses) are optional extras that
``make install`` installs (``requirements-deploy.txt``); this module imports them only when called.

Two translations are added to torch's exporter:

* ``detkit_deploy::nms_per_class`` (detkit's ``batched_nms`` per class in PyTorch) becomes ONNX
  ``NonMaxSuppression`` (opset 10+), which has the same rules: boxes visited by descending score, equal scores by
  ascending index, a box suppressed by a kept box of its class with IoU strictly above the threshold
  (``tests/deploy/test_onnx_export.py`` checks the two against each other, ties and IoUs at the threshold included);
* Python-number arithmetic on the symbolic image size (``sym_float``, ``/``, ``+``) is exported in double
  precision, which the exporter would otherwise do in float32: keep-ratio sizes then match the Python pipeline's
  :func:`~detkit.datasets.transforms.transforms.rescale_size` for every image size (float32 misses by one pixel
  for ~6% of sizes with ``size_rounding='floor'``).
"""
from __future__ import annotations

import importlib
import json
import operator
import os
from types import ModuleType
from typing import Any

import torch
from torch import nn

from detkit.apis.inference import _test_dataset_cfg
from detkit.models.utils.postprocess import NMSConfig, TestConfig

from .graph import DetectorGraph
from .preprocess import PreprocessSpec

__all__ = ['build_graph', 'describe', 'export_onnx', 'optional_import', 'preprocess_spec', 'translation_table']

OPSET = 18


def optional_import(name: str) -> ModuleType:
    """Import one of the deployment extras (``onnx``, ``onnxscript``, ``onnxruntime``), or say how to install it.

    Raises:
        ImportError: naming the package and ``requirements-deploy.txt``.
    """
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(f'{name} is not installed: it is an optional extra of detkit for ONNX export and '
                          f'inference; install it with `pip install -r requirements-deploy.txt` (make install '
                          f'does)') from err


def preprocess_spec(cfg: Any) -> PreprocessSpec:
    """The :class:`PreprocessSpec` of a config's test pipeline (``test_dataloader``, else ``val_dataloader``)."""
    dataset = _test_dataset_cfg(cfg)
    if 'pipeline' not in dataset:
        raise KeyError(f'the test dataset config ({dataset.get("type")}) has no pipeline')
    return PreprocessSpec.from_pipeline(dataset['pipeline'], where=f'{getattr(cfg, "filename", "config")} test '
                                                                   'pipeline')


def build_graph(model: nn.Module, batched: bool = False, max_dets: int | None = None,
                hard_nms: bool = False) -> DetectorGraph:
    """:class:`DetectorGraph` of a model from :func:`~detkit.apis.init_detector` (it reads ``model.cfg``).

    Args:
        model: the detector, with ``cfg``.
        batched: same-size batches ``(N, H, W, 3)``, outputs padded to ``max_dets``.
        max_dets: detections per image; default ``test_cfg.max_per_img``, else ``max_per_class * num_classes``.
        hard_nms: replace a soft-NMS ``test_cfg.nms`` by hard NMS at the same IoU threshold.
    """
    cfg = model.test_cfg
    if hard_nms and cfg.nms.type == 'soft_nms':
        cfg = TestConfig(**{**cfg.__dict__, 'nms': NMSConfig(type='nms', iou_threshold=cfg.nms.iou_threshold)})
    return DetectorGraph(model.eval(), preprocess_spec(model.cfg), cfg, batched=batched, max_dets=max_dets).eval()


def translation_table() -> dict:
    """Custom translations for ``torch.onnx.export(custom_translation_table=...)`` (see the module docstring)."""
    from onnxscript import ir
    from onnxscript import opset18 as op

    double = ir.DataType.DOUBLE

    def nms_per_class(boxes, scores, max_per_class: int, iou_threshold: float, score_threshold: float):
        # max_output_boxes_per_class = 0 would mean "none": no cap is every box
        max_out = op.Constant(value_ints=[max_per_class]) if max_per_class > 0 else op.Shape(boxes, start=1, end=2)
        return op.NonMaxSuppression(boxes, scores, max_out, op.Constant(value_floats=[iou_threshold]),
                                    op.Constant(value_floats=[score_threshold]), center_point_box=0)

    def sym_float(x):
        return op.Cast(x, to=double)

    def truediv(a, b):
        return op.Div(op.Cast(a, to=double), op.Cast(b, to=double))

    def promoted(onnx_op):
        """``onnx_op`` on two operands of one type: double when either is, else the tensor operand's (a Python
        number next to a symbolic size, as in ``x + 0.5``, would otherwise bind the op to two types)."""
        def translate(a, b):
            da, db = getattr(a, 'dtype', None), getattr(b, 'dtype', None)
            if double in (da, db):
                return onnx_op(op.Cast(a, to=double), op.Cast(b, to=double))
            if da is not None:
                return onnx_op(a, op.CastLike(b, a))
            return onnx_op(op.CastLike(a, b), b)
        return translate

    def mul_scalar(self, other):
        # a tensor times a symbolic float (nearest upsampling's index scale in the FPN): torchlib's version wants a
        # Python number there
        return op.Mul(self, op.CastLike(other, self))

    return {torch.ops.detkit_deploy.nms_per_class.default: nms_per_class, torch.sym_float: sym_float,
            operator.truediv: truediv, operator.add: promoted(op.Add), operator.mul: promoted(op.Mul),
            torch.ops.aten.mul.Scalar: mul_scalar}


def export_onnx(model: nn.Module, path: str | os.PathLike, dynamic_batch: bool = False, max_dets: int | None = None,
                hard_nms: bool = False, example_hw: tuple[int, int] = (480, 640)) -> DetectorGraph:
    """Export ``model`` (from :func:`~detkit.apis.init_detector`) with its pre- and post-processing.

    Interface: input ``image`` uint8 ``(H, W, 3)`` BGR of any size (``(N, H, W, 3)`` with ``dynamic_batch``);
    outputs ``boxes`` float32 ``(K, 4)`` in the image's pixels, ``scores`` ``(K,)``, ``labels`` int64 ``(K,)``;
    with ``dynamic_batch`` ``(N, D, 4)``, ``(N, D)``, ``(N, D)`` padded to ``D`` detections (zeros, label -1) and
    ``num_dets`` ``(N,)``.

    Args:
        model: the detector, with ``cfg`` (its test pipeline is exported).
        path: the ``.onnx`` file to write (weights inside it).
        dynamic_batch: export the batched interface.
        max_dets: ``D``; default ``test_cfg.max_per_img``, else ``max_per_class * num_classes`` (every detection
            soft-NMS can keep); a batched export without either needs it.
        hard_nms: export a soft-NMS model with hard NMS (same IoU threshold) instead of soft-NMS rounds.
        example_hw: the size of the example image traced (any size: the exported size is symbolic).

    Returns:
        The :class:`DetectorGraph` exported (run it in PyTorch for the same computation).
    """
    for extra in ('onnx', 'onnxscript'):  # torch.onnx.export(dynamo=True) needs both
        optional_import(extra)
    graph = build_graph(model, batched=dynamic_batch, max_dets=max_dets, hard_nms=hard_nms)
    h, w = example_hw
    example = torch.zeros((2, h, w, 3) if dynamic_batch else (h, w, 3), dtype=torch.uint8)
    dims = {0: torch.export.Dim('height', min=2, max=16384), 1: torch.export.Dim('width', min=2, max=16384)}
    if dynamic_batch:
        dims = {0: torch.export.Dim('batch', min=1, max=1024), **{k + 1: v for k, v in dims.items()}}
    outputs = ['boxes', 'scores', 'labels'] + (['num_dets'] if dynamic_batch else [])
    with torch.no_grad():  # (soft-NMS's scan is traced for inference only)
        program = torch.onnx.export(graph, (example,), dynamo=True, input_names=['image'], output_names=outputs,
                                    dynamic_shapes={'images': dims}, custom_translation_table=translation_table(),
                                    opset_version=OPSET, verbose=False)
    classes = (getattr(model, 'dataset_meta', None) or {}).get('classes') or ()
    # what onnx_demo.py (or any reader) needs to name the labels and to know what the graph does
    program.model.metadata_props.update({
        'detkit.classes': json.dumps(list(classes)),
        'detkit.config': str(getattr(model.cfg, 'filename', '') or ''),
        'detkit.description': describe(graph, model.bbox_head.num_classes),
        'detkit.max_dets': str(graph.max_dets)})
    program.save(os.fspath(path), external_data=False)
    return graph


def describe(graph: DetectorGraph, num_classes: int) -> str:
    """One paragraph on what the exported graph does (printed by the export tool)."""
    spec, cfg = graph.spec, graph.cfg
    size = (f'fit {spec.scale[0]}x{spec.scale[1]} keeping the ratio ({spec.size_rounding})' if spec.keep_ratio
            else f'{spec.scale[0]}x{spec.scale[1]}')
    pad = (f', pad to /{spec.pad_size_divisor}' if spec.pad_size_divisor else
           f', pad to {spec.pad_size}' if spec.pad_size else '')
    if cfg.nms.type == 'soft_nms':
        nms = (f'soft-NMS ({cfg.nms.method}, IoU {cfg.nms.iou_threshold}, sigma {cfg.nms.sigma}, min score '
               f'{cfg.nms.min_score}) as {cfg.max_per_class} rounds per class (one ONNX Scan)')
    else:
        nms = f'NonMaxSuppression per class (IoU {cfg.nms.iou_threshold})'
        if cfg.max_per_class > 0:
            nms += f', {cfg.max_per_class} per class'
    cap = graph.max_dets if graph.max_dets > 0 else 'no cap'
    return (f'pre-processing: uint8 BGR -> float32{" RGB" if spec.to_rgb else ""}, bilinear resize to {size}, '
            f'mean {spec.mean}, std {spec.std}{pad}'
            + (' (the Python pipeline resizes the uint8 image: up to 0.5 grey levels apart)' if spec.resizes_uint8
               else '')
            + f'\npost-processing: score > {cfg.score_thr}, {cfg.nms_pre or "all"} per level, '
            + (f'{cfg.nms_pre_per_class} per class, ' if cfg.nms_pre_per_class > 0 else '')
            + f'{nms}, detections per image: {cap}; {num_classes} classes')

