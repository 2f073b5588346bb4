"""Data pipeline transforms (registered in ``TRANSFORMS``), numpy/OpenCV, mmdetection names and arguments.

A pipeline is a list of config dicts run by :class:`Compose` on a ``results`` dict that a dataset fills with
``img_path``, ``img_id``, ``sample_idx`` and ``ann_info`` (annotations in original-image pixels). See
:mod:`.box_fields` for the box keys and docs/conventions.md for what :class:`PackDetInputs` returns.
"""
from .compose import Compose
from .formatting import PackDetInputs
from .loading import ImageLoadError, LoadAnnotations, LoadImageFromFile, imread
from .transforms import Expand, MinIoURandomCrop, Normalize, Pad, PhotoMetricDistortion, RandomFlip, Resize

__all__ = [
    'Compose', 'ImageLoadError', 'imread', 'LoadImageFromFile', 'LoadAnnotations', 'PhotoMetricDistortion', 'Expand',
    'MinIoURandomCrop', 'Resize', 'RandomFlip', 'Normalize', 'Pad', 'PackDetInputs'
]
