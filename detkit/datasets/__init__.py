"""Datasets (VOC, COCO, TXT and wrappers), the data pipeline, batching and the synthetic shapes generator.

Importing this package registers every dataset in ``DATASETS`` and every transform in ``TRANSFORMS``.
"""
from .base import BaseDetDataset
from .builder import build_dataset
from .coco import CocoDataset
from .collate import DetBatch, collate, worker_init_fn
from .shapes import (HARD_SHAPE_CLASSES, SHAPE_CLASSES, STYLE_CLASSES, generate_shapes, shape_classes,
                     shapes_dataset_cfg, write_shapes)
from .transforms import *  # noqa: F401,F403  (registers the transforms)
from .txt import TxtDataset
from .voc import VOC_CLASSES, VOCDataset
from .wrappers import ConcatDataset, RepeatDataset, find_dataset_attr

__all__ = [
    'BaseDetDataset', 'CocoDataset', 'VOCDataset', 'TxtDataset', 'ConcatDataset', 'RepeatDataset', 'VOC_CLASSES',
    'build_dataset', 'collate', 'DetBatch', 'worker_init_fn', 'SHAPE_CLASSES', 'HARD_SHAPE_CLASSES', 'STYLE_CLASSES',
    'generate_shapes', 'write_shapes', 'shapes_dataset_cfg', 'shape_classes', 'find_dataset_attr'
]
