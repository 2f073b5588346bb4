"""Metrics for the evaluation loop (registered in ``METRICS``)."""
from .coco_metric import CocoMetric
from .voc_metric import VOCMetric

__all__ = ['VOCMetric', 'CocoMetric']
