"""Loading transforms: decode the image file and bring in the annotations."""
from __future__ import annotations

import os

import cv2
import numpy as np

from detkit.registry import TRANSFORMS

from .box_fields import apply_orig_to_img, clip_and_drop

__all__ = ['ImageLoadError', 'LoadImageFromFile', 'LoadAnnotations', 'imread']


class ImageLoadError(OSError):
    """An image file is missing, empty or cannot be decoded. Datasets catch it and use another item."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f'{path}: {reason}')
        self.path = path
        self.reason = reason


_COLOR_FLAGS = {
    # IMREAD_COLOR turns grayscale, palette, RGBA (alpha dropped) and 16-bit files into 3-channel 8-bit BGR and
    # applies the EXIF orientation tag (OpenCV >= 3.1), so every image reaches the pipeline upright as (H, W, 3).
    'color': cv2.IMREAD_COLOR,
    'grayscale': cv2.IMREAD_GRAYSCALE,
}


def imread(path: str, color_type: str = 'color') -> np.ndarray:
    """Read an image file as a 3-channel BGR uint8 array ``(H, W, 3)``, upright per its EXIF orientation.

    Args:
        path: image file.
        color_type: ``'color'`` or ``'grayscale'`` (luminance, replicated into 3 identical channels so the
            rest of the pipeline always sees ``(H, W, 3)``).

    Raises:
        ImageLoadError: naming the file when it is missing, empty or not a decodable image.
        ValueError: for an unknown ``color_type``.
    """
    if color_type not in _COLOR_FLAGS:
        raise ValueError(f'LoadImageFromFile: color_type must be one of {sorted(_COLOR_FLAGS)}, got {color_type!r}')
    if not os.path.isfile(path):
        raise ImageLoadError(path, 'file not found')
    # cv2.imread returns None (no exception) on undecodable data
    img = cv2.imread(path, _COLOR_FLAGS[color_type])
    if img is None or img.size == 0:
        reason = 'empty file' if os.path.getsize(path) == 0 else 'not a decodable image (corrupt or unsupported)'
        raise ImageLoadError(path, reason)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return img


@TRANSFORMS.register_module()
class LoadImageFromFile:
    """Decode ``results['img_path']`` into ``results['img']``.

    Adds ``img`` (BGR ``(H, W, 3)``, uint8 or float32 with ``to_float32``), ``ori_shape`` and ``img_shape``
    (both ``(h, w)`` of the decoded, EXIF-rotated image: the **original** image of this sample).

    Args:
        to_float32: return a float32 image instead of uint8 (the fast photometric path needs uint8, so leave
            this off unless a custom transform needs floats).
        color_type: ``'color'`` (default) or ``'grayscale'`` (see :func:`imread`).

    Raises:
        ImageLoadError: when the file is missing or cannot be decoded; datasets catch it, warn once, count the
            item in ``dataset.bad_items`` and return another item.
    """

    def __init__(self, to_float32: bool = False, color_type: str = 'color') -> None:
        if color_type not in _COLOR_FLAGS:
            raise ValueError(f'LoadImageFromFile: color_type must be one of {sorted(_COLOR_FLAGS)}, '
                             f'got {color_type!r}')
        self.to_float32 = to_float32
        self.color_type = color_type

    def __call__(self, results: dict) -> dict:
        img = imread(results['img_path'], self.color_type)
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['ori_shape'] = img.shape[:2]
        results['img_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return f'LoadImageFromFile(to_float32={self.to_float32}, color_type={self.color_type!r})'


@TRANSFORMS.register_module()
class LoadAnnotations:
    """Copy the dataset's annotations (``results['ann_info']``) into the box fields of ``results``.

    ``ann_info`` holds ``bboxes`` ``(m, 4)``, ``labels`` ``(m,)``, ``bboxes_ignore`` ``(k, 4)`` and
    ``labels_ignore`` ``(k,)`` in **original-image** pixels (what ``dataset.get_ann_info`` returns). This
    transform writes ``gt_bboxes`` / ``gt_labels`` / ``gt_bboxes_ignore`` / ``gt_labels_ignore`` in
    **current-image** pixels: when it runs after Resize/RandomFlip/Expand/crop (as in a test pipeline that
    resizes first) the recorded original→current map is applied, then boxes are clipped to the image and
    degenerate ones dropped with their labels.

    Args:
        with_bbox: load boxes (and their labels). ``False`` makes this transform a no-op.
        with_label: also load the labels of the boxes.
    """

    def __init__(self, with_bbox: bool = True, with_label: bool = True) -> None:
        self.with_bbox = with_bbox
        self.with_label = with_label

    def __call__(self, results: dict) -> dict:
        if not self.with_bbox:
            return results
        ann = results.get('ann_info')
        if ann is None:
            raise KeyError('LoadAnnotations: results has no "ann_info"; it reads the annotations a dataset puts '
                           'there, so use it inside a detkit dataset pipeline')
        transform = results.get('orig_to_img')
        for box_key, label_key, src_box, src_label in (('gt_bboxes', 'gt_labels', 'bboxes', 'labels'),
                                                       ('gt_bboxes_ignore', 'gt_labels_ignore', 'bboxes_ignore',
                                                        'labels_ignore')):
            boxes = np.asarray(ann.get(src_box, np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
            boxes = apply_orig_to_img(boxes, transform) if transform is not None else boxes.copy()
            results[box_key] = boxes
            if self.with_label:
                results[label_key] = np.asarray(ann.get(src_label, np.zeros(0)), dtype=np.int64).reshape(-1).copy()
        if 'img_shape' in results:
            clip_and_drop(results)
        return results

    def __repr__(self) -> str:
        return f'LoadAnnotations(with_bbox={self.with_bbox}, with_label={self.with_label})'
