"""Loading transforms: decode the image file and bring in the annotations."""
from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from detkit.registry import TRANSFORMS
from detkit.utils.errors import ConfigError, DetkitError

from .box_fields import apply_orig_to_img, clip_and_drop

__all__ = ['ImageLoadError', 'LoadImageFromFile', 'LoadAnnotations', 'imread', 'jpeg_truncation']


class ImageLoadError(DetkitError, OSError):
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


_JPEG_SOI, _JPEG_EOI = b'\xff\xd8', b'\xff\xd9'


def jpeg_truncation(path: str) -> str | None:
    """Why the JPEG file at ``path`` is cut short, or ``None`` when it is complete or not a JPEG.

    A complete JPEG ends its last scan with the end-of-image marker (``FF D9``). Most files end with it, which
    is checked by reading the last two bytes; other files (padding or data appended after the image) are walked
    marker by marker, so that an ``FF D9`` inside an EXIF thumbnail does not count. A file whose header is not
    a sequence of JPEG segments is left to the decoder, which reports it as undecodable.
    """
    with open(path, 'rb') as f:
        if f.read(2) != _JPEG_SOI:
            return None
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(size - 2, 0))
        if f.read(2) == _JPEG_EOI:
            return None
        f.seek(0)
        data = f.read()
    return _walk_jpeg(data)


def _walk_jpeg(data: bytes) -> str | None:
    """The marker walk of :func:`jpeg_truncation` over a whole file starting with SOI."""
    n, pos = len(data), 2
    while True:
        if pos >= n:
            return 'truncated JPEG (the file ends inside its header)'
        if data[pos] != 0xFF:
            return None  # not a marker where one must be: corrupt rather than cut short; the decoder says so
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            return 'truncated JPEG (the file ends inside its header)'
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            return None  # end of image
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue  # stand-alone markers carry no length
        if pos + 2 > n or pos + int.from_bytes(data[pos:pos + 2], 'big') > n:
            return 'truncated JPEG (the file ends inside its header)'
        pos += int.from_bytes(data[pos:pos + 2], 'big')
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next marker other than FF00 / RSTn
            while True:
                pos = data.find(b'\xff', pos)
                if pos < 0 or pos + 1 >= n:
                    return 'truncated JPEG (no end-of-image marker: the file was cut short)'
                nxt = data[pos + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                    pos += 2
                elif nxt == 0xFF:
                    pos += 1
                else:
                    break


def imread(path: str, color_type: str = 'color') -> np.ndarray:
    """Read an image file as a 3-channel BGR uint8 array ``(H, W, 3)``, upright per its EXIF orientation.

    Policy for damaged files, decided here for every reader of images (datasets, inference, tools): a missing,
    empty or undecodable file, and a **truncated JPEG** (one without its end-of-image marker, e.g. an interrupted
    download), is unreadable: :class:`ImageLoadError` names the file and the reason. A truncated JPEG is detected
    before decoding, so libjpeg never decodes it partially (grey bottom rows) nor prints its "Premature end of
    JPEG file" line, which names no file; datasets then warn once with the path and count the item.

    Args:
        path: image file.
        color_type: ``'color'`` or ``'grayscale'`` (luminance, replicated into 3 identical channels so the
            rest of the pipeline always sees ``(H, W, 3)``).

    Raises:
        ImageLoadError: naming the file when it is missing, empty, a truncated JPEG or not a decodable image.
        ValueError: for an unknown ``color_type``.
    """
    if color_type not in _COLOR_FLAGS:
        raise ValueError(f'LoadImageFromFile: color_type must be one of {sorted(_COLOR_FLAGS)}, got {color_type!r}')
    if not os.path.isfile(path):
        raise ImageLoadError(path, 'file not found')
    truncated = jpeg_truncation(path)
    if truncated:
        raise ImageLoadError(path, truncated)
    # cv2.imread returns None (no exception) on undecodable data
    img = cv2.imread(path, _COLOR_FLAGS[color_type])
    if img is None or img.size == 0:
        reason = 'empty file' if os.path.getsize(path) == 0 else 'not a decodable image (corrupt or unsupported)'
        raise ImageLoadError(path, reason)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return img


def check_backend_args(backend_args: dict[str, Any] | None, owner: str) -> None:
    """Accept mmdetection 3.x's ``backend_args=None`` (local files, what every mmdetection 3.x config passes).

    Raises:
        ConfigError: naming ``owner`` for any other value: detkit reads local files only.
    """
    if backend_args is not None:
        raise ConfigError(f'{owner}: backend_args={backend_args!r} is not supported: detkit reads local files only '
                          '(backend_args=None, or leave it out)')


@TRANSFORMS.register_module()
class LoadImageFromFile:
    """Decode ``results['img_path']`` into ``results['img']``.

    Adds ``img`` (BGR ``(H, W, 3)``, uint8 or float32 with ``to_float32``), ``ori_shape`` and ``img_shape``
    (both ``(h, w)`` of the decoded, EXIF-rotated image: the **original** image of this sample).

    Args:
        to_float32: return a float32 image instead of uint8 (the fast photometric path needs uint8, so leave
            this off unless a custom transform needs floats).
        color_type: ``'color'`` (default) or ``'grayscale'`` (see :func:`imread`).
        backend_args: mmdetection 3.x's file backend; only ``None`` (local files), see :func:`check_backend_args`.

    Raises:
        ImageLoadError: when the file is missing, a truncated JPEG or cannot be decoded (see :func:`imread`);
            datasets catch it, warn once, count the item in ``dataset.bad_items`` and return another item.
    """

    def __init__(self, to_float32: bool = False, color_type: str = 'color',
                 backend_args: dict[str, Any] | None = None) -> None:
        check_backend_args(backend_args, 'LoadImageFromFile')
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
