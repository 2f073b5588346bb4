"""Task modules shared by heads: prior (anchor) generators, assigners and box coders.

Importing this package registers them in ``detkit.registry.TASK_UTILS``.
"""
from .assigners import AssignResult, MaxIoUAssigner
from .coders import DeltaXYWHBBoxCoder
from .prior_generators import AnchorGenerator, SSDAnchorGenerator

__all__ = ['AssignResult', 'MaxIoUAssigner', 'DeltaXYWHBBoxCoder', 'AnchorGenerator', 'SSDAnchorGenerator']
