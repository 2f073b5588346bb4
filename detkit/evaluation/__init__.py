"""Evaluation: ``eval_map`` and the ``VOCMetric`` / ``CocoMetric`` metrics (importing registers them)."""
from .functional import average_precision, eval_map, print_map_summary
from .metrics import CocoMetric, VOCMetric

__all__ = ['eval_map', 'average_precision', 'print_map_summary', 'VOCMetric', 'CocoMetric']
