"""Deployment: the whole detector as one graph (pre-processing, network, decoding, NMS) and its ONNX export.

``onnx``, ``onnxscript`` and ``onnxruntime`` are optional extras (``make install`` installs them); only
:mod:`detkit.deploy.onnx_export` needs them, and imports them when called.
"""
from .compare import paired_differences
from .graph import DetectorGraph, detection_cap, nms_per_class, soft_nms_rounds
from .onnx_export import build_graph, describe, export_onnx, optional_import, preprocess_spec
from .preprocess import PreprocessSpec, preprocess, target_size

__all__ = ['DetectorGraph', 'PreprocessSpec', 'build_graph', 'describe', 'detection_cap', 'export_onnx',
           'nms_per_class', 'optional_import', 'paired_differences', 'preprocess', 'preprocess_spec', 'soft_nms_rounds',
           'target_size']
