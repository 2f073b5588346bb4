"""Photometric and geometric training/test transforms (numpy + OpenCV), mmdetection names and arguments.

Every transform takes and returns the ``results`` dict described in :mod:`.box_fields`. Images are BGR
``(H, W, 3)`` uint8 until :class:`Normalize` (float32, RGB when ``to_rgb``). Transforms never write into the
incoming image array (crops may hand on views), so a sample's arrays are never modified behind its back.

Randomness comes from the global ``numpy.random`` state, as in mmdetection: seed it per data-loader worker
(:func:`detkit.datasets.worker_init_fn`) so that workers do not repeat each other's augmentations.
"""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from detkit.registry import TRANSFORMS
from detkit.structures.bbox_np import bbox_overlaps_np

from .box_fields import clip_and_drop, iter_box_fields, keep_boxes, update_orig_to_img

__all__ = ['PhotoMetricDistortion', 'Expand', 'MinIoURandomCrop', 'Resize', 'RandomFlip', 'Normalize', 'Pad']

_IDENTITY = np.arange(256, dtype=np.float32)


def _lut_u8(values: np.ndarray) -> np.ndarray:
    """Round and clip a 256-entry float table to uint8, the way a float image would be rounded at the end."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


@TRANSFORMS.register_module()
class PhotoMetricDistortion:
    """Random brightness, contrast, saturation, hue and channel order (the SSD colour augmentation).

    mmdetection's order and probabilities: brightness (p 0.5); contrast either first or last (p 0.5 each, then
    applied with p 0.5); saturation (p 0.5); hue (p 0.5); random channel permutation (p 0.5). Each draw is
    applied with p 0.5 and the values are uniform in the given ranges.

    Speed: on uint8 images every step is a 256-entry look-up table applied by ``cv2.LUT``; brightness and a
    leading contrast are folded into ONE table (computed in float, so no intermediate clipping, like the float
    reference), and saturation and hue are one 3-channel table on OpenCV's uint8 HSV image (hue in 0..179 half
    degrees, so ``hue_delta`` degrees are shifted by ``round(delta / 2)``). The image is converted to HSV only
    when saturation or hue is drawn. Float images take an equivalent float path. Saturation is clipped to its
    valid range (mmdetection's float version lets it exceed 1, producing out-of-gamut colours).

    Args:
        brightness_delta: brightness offset range ``[-delta, delta]`` in grey levels.
        contrast_range: contrast factor range ``(lower, upper)``.
        saturation_range: saturation factor range ``(lower, upper)``.
        hue_delta: hue shift range ``[-delta, delta]`` in degrees (0..360 scale).
    """

    def __init__(self, brightness_delta: int = 32, contrast_range: Sequence[float] = (0.5, 1.5),
                 saturation_range: Sequence[float] = (0.5, 1.5), hue_delta: int = 18) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = contrast_range
        self.saturation_lower, self.saturation_upper = saturation_range
        self.hue_delta = hue_delta

    def _random_flags(self) -> tuple:
        rand = np.random
        mode = rand.randint(2)
        brightness = rand.uniform(-self.brightness_delta, self.brightness_delta) if rand.randint(2) else None
        contrast = rand.uniform(self.contrast_lower, self.contrast_upper) if rand.randint(2) else None
        saturation = rand.uniform(self.saturation_lower, self.saturation_upper) if rand.randint(2) else None
        hue = rand.uniform(-self.hue_delta, self.hue_delta) if rand.randint(2) else None
        permutation = rand.permutation(3) if rand.randint(2) else None
        return mode, brightness, contrast, saturation, hue, permutation

    def __call__(self, results: dict) -> dict:
        img = results['img']
        mode, brightness, contrast, saturation, hue, permutation = self._random_flags()
        contrast_first = contrast if mode == 1 else None
        contrast_last = contrast if mode == 0 else None
        if img.dtype == np.uint8:
            img = self._distort_u8(img, brightness, contrast_first, saturation, hue, contrast_last)
        else:
            img = self._distort_float(img.astype(np.float32), brightness, contrast_first, saturation, hue,
                                      contrast_last)
        if permutation is not None and not (permutation == (0, 1, 2)).all():
            img = np.ascontiguousarray(img[..., permutation])
        results['img'] = img
        return results

    @staticmethod
    def _distort_u8(img: np.ndarray, brightness: float | None, contrast_first: float | None,
                    saturation: float | None, hue: float | None, contrast_last: float | None) -> np.ndarray:
        if brightness is not None or contrast_first is not None:
            table = _IDENTITY + (brightness or 0.0)
            if contrast_first is not None:
                table = table * contrast_first
            img = cv2.LUT(img, _lut_u8(table))
        if saturation is not None or hue is not None:
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            table = np.empty((1, 256, 3), dtype=np.uint8)
            idx = np.arange(256)
            shift = int(round(hue / 2.0)) if hue is not None else 0
            # uint8 hue lives in 0..179; wrap around the colour circle
            table[0, :, 0] = np.where(idx < 180, (idx + shift) % 180, idx)
            table[0, :, 1] = _lut_u8(_IDENTITY * saturation) if saturation is not None else idx
            table[0, :, 2] = idx
            img = cv2.cvtColor(cv2.LUT(hsv, table), cv2.COLOR_HSV2BGR)
        if contrast_last is not None:
            img = cv2.LUT(img, _lut_u8(_IDENTITY * contrast_last))
        return img

    @staticmethod
    def _distort_float(img: np.ndarray, brightness: float | None, contrast_first: float | None,
                       saturation: float | None, hue: float | None, contrast_last: float | None) -> np.ndarray:
        if brightness is not None:
            img += brightness
        if contrast_first is not None:
            img *= contrast_first
        if saturation is not None or hue is not None:
            # float HSV from OpenCV: H in [0, 360), S in [0, 1], V unchanged
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            if saturation is not None:
                # S > 1 is not a colour: clip like the uint8 path (mmdetection lets it overshoot)
                hsv[..., 1] = np.minimum(hsv[..., 1] * saturation, 1.0)
            if hue is not None:
                hsv[..., 0] = np.mod(hsv[..., 0] + hue, 360.0)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        if contrast_last is not None:
            img *= contrast_last
        return img

    def __repr__(self) -> str:
        return (f'PhotoMetricDistortion(brightness_delta={self.brightness_delta}, contrast_range='
                f'{(self.contrast_lower, self.contrast_upper)}, saturation_range='
                f'{(self.saturation_lower, self.saturation_upper)}, hue_delta={self.hue_delta})')


@TRANSFORMS.register_module()
class Expand:
    """Zoom out: place the image at a random spot of a larger canvas filled with the mean colour.

    With probability ``prob`` the canvas is ``ratio`` times the image size, ``ratio ~ U(ratio_range)``; boxes are
    translated by the placement offset. ``cv2.copyMakeBorder`` writes the canvas in one pass.

    Args:
        mean: fill colour, in RGB order when ``to_rgb`` (as the Normalize mean is written), else BGR.
        to_rgb: whether ``mean`` is given in RGB order (the image is BGR, so it is reversed).
        ratio_range: ``(min_ratio, max_ratio)`` of canvas side to image side, ``min_ratio >= 1``.
        prob: probability of expanding.
    """

    def __init__(self, mean: Sequence[float] = (123.675, 116.28, 103.53), to_rgb: bool = True,
                 ratio_range: Sequence[float] = (1, 4), prob: float = 0.5) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.to_rgb = to_rgb
        self.min_ratio, self.max_ratio = ratio_range
        if self.min_ratio < 1:
            raise ValueError(f'Expand: ratio_range must start at >= 1, got {tuple(ratio_range)}')
        self.prob = prob
        self._fill_bgr = self.mean[::-1] if to_rgb else self.mean

    def __call__(self, results: dict) -> dict:
        if np.random.uniform() >= self.prob:
            return results
        img = results['img']
        h, w = img.shape[:2]
        ratio = np.random.uniform(self.min_ratio, self.max_ratio)
        new_w, new_h = int(w * ratio), int(h * ratio)
        left = int(np.random.uniform(0, new_w - w))
        top = int(np.random.uniform(0, new_h - h))
        fill = tuple(round(v) for v in self._fill_bgr) if img.dtype == np.uint8 else self._fill_bgr
        img = cv2.copyMakeBorder(img, top, new_h - h - top, left, new_w - w - left, cv2.BORDER_CONSTANT,
                                 value=fill)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        for box_key, _ in iter_box_fields(results):
            results[box_key] = results[box_key] + np.array([left, top, left, top], dtype=np.float32)
        update_orig_to_img(results, 1.0, 1.0, left, top)
        clip_and_drop(results, clip=False)  # a box narrower than a float32 step at its new place is now empty
        return results

    def __repr__(self) -> str:
        return (f'Expand(mean={self.mean}, to_rgb={self.to_rgb}, ratio_range={(self.min_ratio, self.max_ratio)}, '
                f'prob={self.prob})')


@TRANSFORMS.register_module()
class MinIoURandomCrop:
    """SSD random crop: a patch whose IoU with every ground-truth box is at least a randomly chosen minimum.

    mmdetection's algorithm: draw a mode from ``(1, *min_ious, 0)`` (1 = keep the image); for a minimum IoU,
    try 50 patches of side ``U(min_crop_size, 1)`` times the image side with aspect ratio ``h / w`` in
    ``[0.5, 2]``, and accept the first whose IoU with every ``gt_bboxes`` box is ``>= min_iou`` and which
    contains at least one box centre; boxes whose centre lies outside the patch are dropped (with their labels),
    the rest are clipped to it. When all 50 fail another mode is drawn. The 50 trials are drawn and scored in
    one vectorised step; the first acceptable one wins, exactly as in the sequential loop.

    Args:
        min_ious: minimum IoU values to choose from.
        min_crop_size: minimum patch side as a fraction of the image side.
        bbox_clip_border: clip kept boxes to the patch.

    Raises:
        KeyError: when ``gt_bboxes`` is missing (put ``LoadAnnotations`` before this transform).
    """

    _TRIALS = 50

    def __init__(self, min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size: float = 0.3,
                 bbox_clip_border: bool = True) -> None:
        self.min_ious = tuple(min_ious)
        self.sample_mode = (1, *self.min_ious, 0)
        self.min_crop_size = min_crop_size
        self.bbox_clip_border = bbox_clip_border

    @staticmethod
    def _centers_in(boxes: np.ndarray, patches: np.ndarray) -> np.ndarray:
        """``(P, N)`` bool: centre of box n strictly inside patch p."""
        cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
        cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
        return ((cx[None] > patches[:, 0:1]) & (cy[None] > patches[:, 1:2]) & (cx[None] < patches[:, 2:3])
                & (cy[None] < patches[:, 3:4]))

    def __call__(self, results: dict) -> dict:
        if 'gt_bboxes' not in results:
            raise KeyError('MinIoURandomCrop needs "gt_bboxes": put LoadAnnotations before it in the pipeline')
        img = results['img']
        boxes = results['gt_bboxes']
        h, w = img.shape[:2]
        rand = np.random
        while True:
            mode = self.sample_mode[rand.randint(len(self.sample_mode))]
            if mode == 1:
                return results
            new_w = rand.uniform(self.min_crop_size * w, w, size=self._TRIALS)
            new_h = rand.uniform(self.min_crop_size * h, h, size=self._TRIALS)
            left = rand.uniform(0.0, 1.0, size=self._TRIALS) * (w - new_w)
            top = rand.uniform(0.0, 1.0, size=self._TRIALS) * (h - new_h)
            # int() truncation as in the reference, so patches are whole pixels
            patches = np.stack([left, top, left + new_w, top + new_h], axis=1).astype(np.int64)
            aspect = new_h / new_w
            ok = (aspect >= 0.5) & (aspect <= 2) & (patches[:, 2] > patches[:, 0]) & (patches[:, 3] > patches[:, 1])
            if len(boxes):
                ok &= bbox_overlaps_np(patches, boxes).min(axis=1) >= mode
                ok &= self._centers_in(boxes, patches).any(axis=1)
            hits = np.flatnonzero(ok)
            if len(hits):
                return self._crop(results, patches[hits[0]])

    def _crop(self, results: dict, patch: np.ndarray) -> dict:
        x1, y1, x2, y2 = (int(v) for v in patch)
        results['img'] = results['img'][y1:y2, x1:x2]
        results['img_shape'] = (y2 - y1, x2 - x1)
        offset = np.array([x1, y1, x1, y1], dtype=np.float32)
        for box_key, label_key in iter_box_fields(results):
            boxes = results[box_key]
            keep_boxes(results, box_key, label_key, self._centers_in(boxes, patch[None])[0])
            results[box_key] = results[box_key] - offset  # a new array: the caller's boxes are left alone
        update_orig_to_img(results, 1.0, 1.0, -x1, -y1)
        clip_and_drop(results, clip=self.bbox_clip_border)
        return results

    def __repr__(self) -> str:
        return (f'MinIoURandomCrop(min_ious={self.min_ious}, min_crop_size={self.min_crop_size}, '
                f'bbox_clip_border={self.bbox_clip_border})')


_INTERPOLATION = {
    'nearest': cv2.INTER_NEAREST,
    'bilinear': cv2.INTER_LINEAR,
    'bicubic': cv2.INTER_CUBIC,
    'area': cv2.INTER_AREA,
    'lanczos': cv2.INTER_LANCZOS4,
}


_SIZE_ROUNDING = ('half_up', 'floor')


def _round_size(value: float, rounding: str) -> int:
    """A scaled side length in whole pixels: ``'half_up'`` (mmcv) or ``'floor'`` (torch ``interpolate``), and at
    least 1 (a 1 x 3000 image fit into 1333 x 800 keeps a row instead of becoming empty)."""
    return max(1, int(value + 0.5) if rounding == 'half_up' else math.floor(value))


def rescale_size(w: int, h: int, scale: tuple[int, int], rounding: str = 'half_up') -> tuple[int, int]:
    """Keep-ratio target size: as large as possible with the long side <= max(scale), short side <= min(scale).

    The factor is ``min(max(scale) / long side, min(scale) / short side)``, computed in Python floats exactly as
    mmcv and torchvision compute it, so that the rounding below is theirs to the last bit.

    Args:
        w: width of the image to resize.
        h: height of the image to resize.
        scale: ``(w, h)`` to fit (the order does not matter, only the long and short edges).
        rounding: ``'half_up'`` rounds ``side * factor`` half up (mmcv's ``rescale_size``: 640x480 to fit 1333x800
            gives 1067x800); ``'floor'`` truncates it, as torchvision's ``GeneralizedRCNNTransform`` does through
            ``F.interpolate(scale_factor=..., recompute_scale_factor=True)`` (1066x800).

    Returns:
        ``(new_w, new_h)``, each at least 1 (a side that would round to 0 px is 1 px).
    """
    if rounding not in _SIZE_ROUNDING:
        raise ValueError(f'rescale_size: rounding must be one of {_SIZE_ROUNDING}, got {rounding!r}')
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(h, w), short_edge / min(h, w))
    return _round_size(w * factor, rounding), _round_size(h * factor, rounding)


@TRANSFORMS.register_module()
class Resize:
    """Resize the image to a fixed size or, with ``keep_ratio``, to fit a size; scale the boxes with it.

    Records ``scale_factor = (sx, sy) = (new_w / w, new_h / h)`` (multiplied into any earlier one), so that
    ``input = original * scale`` for a pipeline without crops, and ``img_shape``.

    Args:
        scale: target ``(w, h)`` (an int means square). With ``keep_ratio`` the image is scaled by one factor
            so that its long side fits ``max(scale)`` and its short side ``min(scale)``.
        scale_factor: resize by this factor (float or ``(fx, fy)``) instead of to ``scale``.
        keep_ratio: keep the aspect ratio (see ``scale``).
        clip_object_border: clip boxes to the resized image.
        interpolation: ``'nearest'``, ``'bilinear'``, ``'bicubic'``, ``'area'`` or ``'lanczos'``. OpenCV's
            bilinear resize of a float32 image is torch's ``interpolate(mode='bilinear', align_corners=False)``
            to ~1e-4 grey levels; of a uint8 image it rounds every pixel to an integer (up to 0.5 grey levels
            off). Load with ``LoadImageFromFile(to_float32=True)`` to resize floats.
        size_rounding: how a scaled side becomes whole pixels when the size is computed (``keep_ratio`` or
            ``scale_factor``): ``'half_up'`` (mmcv, mmdetection) or ``'floor'`` (torchvision's detection
            transform); see :func:`rescale_size`. A computed side is at least 1 px; ``scale_factor`` records the
            size actually made.
    """

    def __init__(self, scale: int | Sequence[int] | None = None, scale_factor: float | Sequence[float] | None = None,
                 keep_ratio: bool = False, clip_object_border: bool = True, interpolation: str = 'bilinear',
                 size_rounding: str = 'half_up') -> None:
        if (scale is None) == (scale_factor is None):
            raise ValueError('Resize: give exactly one of scale=(w, h) and scale_factor')
        if interpolation not in _INTERPOLATION:
            raise ValueError(f'Resize: interpolation must be one of {sorted(_INTERPOLATION)}, got {interpolation!r}')
        if size_rounding not in _SIZE_ROUNDING:
            raise ValueError(f'Resize: size_rounding must be one of {_SIZE_ROUNDING}, got {size_rounding!r}')
        self.size_rounding = size_rounding
        if isinstance(scale, int):
            scale = (scale, scale)
        self.scale = tuple(int(s) for s in scale) if scale is not None else None
        if isinstance(scale_factor, (int, float)):
            scale_factor = (float(scale_factor), float(scale_factor))
        self.scale_factor = tuple(scale_factor) if scale_factor is not None else None
        self.keep_ratio = keep_ratio
        self.clip_object_border = clip_object_border
        self.interpolation = interpolation

    def _target_size(self, w: int, h: int) -> tuple[int, int]:
        if self.scale is not None:
            return rescale_size(w, h, self.scale, self.size_rounding) if self.keep_ratio else self.scale
        fx, fy = self.scale_factor
        if self.keep_ratio:
            fy = fx
        return _round_size(w * fx, self.size_rounding), _round_size(h * fy, self.size_rounding)

    def __call__(self, results: dict) -> dict:
        img = results['img']
        h, w = img.shape[:2]
        new_w, new_h = self._target_size(w, h)
        if (new_w, new_h) != (w, h):
            img = cv2.resize(img, (new_w, new_h), interpolation=_INTERPOLATION[self.interpolation])
        sx, sy = new_w / w, new_h / h
        results['img'] = img
        results['img_shape'] = (new_h, new_w)
        old_sx, old_sy = results.get('scale_factor', (1.0, 1.0))
        results['scale_factor'] = (old_sx * sx, old_sy * sy)
        results['keep_ratio'] = self.keep_ratio
        scale = np.array([sx, sy, sx, sy], dtype=np.float32)
        for box_key, _ in iter_box_fields(results):
            results[box_key] = results[box_key] * scale
        update_orig_to_img(results, sx, sy, 0.0, 0.0)
        clip_and_drop(results, clip=self.clip_object_border)
        return results

    def __repr__(self) -> str:
        return (f'Resize(scale={self.scale}, scale_factor={self.scale_factor}, keep_ratio={self.keep_ratio}, '
                f'clip_object_border={self.clip_object_border}, interpolation={self.interpolation!r}, '
                f'size_rounding={self.size_rounding!r})')


@TRANSFORMS.register_module()
class RandomFlip:
    """Flip the image and boxes with probability ``prob``.

    A horizontal flip maps ``x`` to ``w - x`` (continuous pixel coordinates, no ``-1``), so box
    ``(x1, y1, x2, y2)`` becomes ``(w - x2, y1, w - x1, y2)``. Records ``flip`` and ``flip_direction``
    (``None`` when not flipped).

    Args:
        prob: flip probability.
        direction: ``'horizontal'``, ``'vertical'`` or ``'diagonal'`` (both).
    """

    _CV2_CODE = {'horizontal': 1, 'vertical': 0, 'diagonal': -1}

    def __init__(self, prob: float = 0.5, direction: str = 'horizontal') -> None:
        if not 0 <= prob <= 1:
            raise ValueError(f'RandomFlip: prob must be in [0, 1], got {prob}')
        if direction not in self._CV2_CODE:
            raise ValueError(f'RandomFlip: direction must be one of {sorted(self._CV2_CODE)}, got {direction!r}')
        self.prob = prob
        self.direction = direction

    def __call__(self, results: dict) -> dict:
        flip = bool(np.random.uniform() < self.prob)
        results['flip'] = flip
        results['flip_direction'] = self.direction if flip else None
        if not flip:
            return results
        img = results['img']
        h, w = img.shape[:2]
        results['img'] = cv2.flip(img, self._CV2_CODE[self.direction])
        hflip = self.direction in ('horizontal', 'diagonal')
        vflip = self.direction in ('vertical', 'diagonal')
        for box_key, _ in iter_box_fields(results):
            boxes = results[box_key].copy()
            if hflip:
                boxes[:, [0, 2]] = w - results[box_key][:, [2, 0]]
            if vflip:
                boxes[:, [1, 3]] = h - results[box_key][:, [3, 1]]
            results[box_key] = boxes
        update_orig_to_img(results, -1.0 if hflip else 1.0, -1.0 if vflip else 1.0, w if hflip else 0.0,
                           h if vflip else 0.0)
        clip_and_drop(results, clip=False)  # ``w - x`` rounds: a box narrower than a float32 step becomes empty
        return results

    def __repr__(self) -> str:
        return f'RandomFlip(prob={self.prob}, direction={self.direction!r})'


@TRANSFORMS.register_module()
class Normalize:
    """``(img - mean) / std`` per channel into float32, after converting BGR to RGB when ``to_rgb``.

    A uint8 image is converted and normalised in ONE ``cv2.LUT`` pass with a float32 table
    ``(v - mean_c) / std_c`` per channel (no float64 temporaries, no separate astype copy).

    Args:
        mean: per-channel mean, in the channel order of the output (RGB when ``to_rgb``).
        std: per-channel standard deviation, same order.
        to_rgb: convert BGR to RGB first.
    """

    def __init__(self, mean: Sequence[float] = (123.675, 116.28, 103.53), std: Sequence[float] = (1.0, 1.0, 1.0),
                 to_rgb: bool = True) -> None:
        self._args = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3)
        self.std = np.asarray(std, dtype=np.float32).reshape(3)
        if (self.std <= 0).any():
            raise ValueError(f'Normalize: std must be positive, got {tuple(std)}')
        self.to_rgb = to_rgb
        self._lut = ((np.arange(256, dtype=np.float32)[:, None] - self.mean[None]) / self.std[None])[None]

    def __call__(self, results: dict) -> dict:
        img = results['img']
        if self.to_rgb:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if img.dtype == np.uint8:
            img = cv2.LUT(img, self._lut)  # (1, 256, 3) float32 table → float32 output
        else:
            img = (img.astype(np.float32) - self.mean) / self.std
        results['img'] = img
        results['img_norm_cfg'] = dict(mean=self._args[0], std=self._args[1], to_rgb=self.to_rgb)
        return results

    def __repr__(self) -> str:
        return f'Normalize(mean={self._args[0]}, std={self._args[1]}, to_rgb={self.to_rgb})'


@TRANSFORMS.register_module()
class Pad:
    """Pad the image at the bottom and right to a fixed size or to a multiple of ``size_divisor``.

    Boxes do not move (padding is bottom/right). Records ``pad_shape`` ``(h, w)`` of the padded image;
    ``img_shape`` stays the unpadded size.

    Args:
        size: fixed ``(w, h)`` to pad to (must not be smaller than the image).
        size_divisor: pad each side up to a multiple of this.
        pad_to_square: pad to a square of the longer side first.
        pad_val: fill value, a number or ``dict(img=value)`` as in mmdetection.
    """

    def __init__(self, size: Sequence[int] | None = None, size_divisor: int | None = None,
                 pad_to_square: bool = False, pad_val: float | dict = 0) -> None:
        if size is None and size_divisor is None and not pad_to_square:
            raise ValueError('Pad: give size=(w, h), size_divisor or pad_to_square=True')
        if size is not None and size_divisor is not None:
            raise ValueError('Pad: give only one of size and size_divisor')
        self.size = tuple(size) if size is not None else None
        self.size_divisor = size_divisor
        self.pad_to_square = pad_to_square
        self.pad_val = float(pad_val.get('img', 0) if isinstance(pad_val, dict) else pad_val)

    def __call__(self, results: dict) -> dict:
        img = results['img']
        h, w = img.shape[:2]
        target_w, target_h = (w, h)
        if self.pad_to_square:
            target_w = target_h = max(w, h)
        if self.size is not None:
            target_w, target_h = self.size
            if target_w < w or target_h < h:
                raise ValueError(f'Pad: size (w, h)={self.size} is smaller than the image ({w}, {h}) of '
                                 f'{results.get("img_path", "this sample")}')
        if self.size_divisor is not None:
            d = self.size_divisor
            target_w, target_h = int(math.ceil(target_w / d)) * d, int(math.ceil(target_h / d)) * d
        if (target_w, target_h) != (w, h):
            img = cv2.copyMakeBorder(img, 0, target_h - h, 0, target_w - w, cv2.BORDER_CONSTANT,
                                     value=(self.pad_val,) * 4)
        results['img'] = img
        results['pad_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return (f'Pad(size={self.size}, size_divisor={self.size_divisor}, pad_to_square={self.pad_to_square}, '
                f'pad_val={self.pad_val})')
