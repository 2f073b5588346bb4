"""Metric functions on numpy arrays."""
from .mean_ap import average_precision, eval_map, print_map_summary

__all__ = ['eval_map', 'average_precision', 'print_map_summary']
