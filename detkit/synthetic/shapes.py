"""Synthetic "shapes" detection data in two styles: ``simple`` (the quickstart's) and ``hard``.

Small, deterministic and learnable: a quickstart trains a small SSD on it in CPU minutes, and tests use it to
check that the VOC, COCO and TXT loaders read identical boxes. Boxes are **tight** around the visible pixels of
each shape (occluded parts excluded), in integer pixels of that image, ``x1, y1, x2, y2`` with ``x2`` one past
the last column (continuous coordinates, no +1).

Styles (classes in :data:`STYLE_CLASSES`):

* ``simple`` (:data:`SHAPE_CLASSES`: circle, square, triangle, star): square ``size x size`` images, a smooth
  colour field with a few lines and dots, objects spanning 14%..44% of the side. Its output is frozen (the
  quickstart's published numbers depend on it).
* ``hard`` (:data:`HARD_SHAPE_CLASSES`: ellipse, cross, ring, heart): other silhouettes on data a recipe was not
  tuned on. Width and height are drawn uniformly in ``[0.7, 1.5] x size`` (224..480 px at the default 320) and
  redrawn until ``width / height`` is in ``[0.6, 1.7]``; each object's unoccluded box has its longer side at
  10%..45% of the image's short side (its square drawn uniformly), at any rotation; the background is a smooth
  colour field under stripes, a checkerboard, a grid or a noise texture, with translucent patches of other
  colours; distractor strokes (lines, polylines, open arcs, rectangle and triangle outlines, small blobs) lie
  under the objects. Objects keep 60% of their pixels visible; each is one flat colour at least 100 (RGB
  distance) from the mean of its surroundings and 80 from 95% of their pixels. 1..5 objects per image, as in the
  simple style.

Image ``i`` of a split depends only on ``(seed, split, i, style)``, so the same seed gives the same images and
boxes whatever the number of images, the format or the number of worker processes, and different splits never
share images.

API::

    for sample in generate_shapes(num=100, seed=0, size=320, split='train', style='hard'):
        sample.image, sample.bboxes, sample.labels   # BGR uint8 (h, w, 3), (n, 4) float32, (n,) int64
    write_shapes('data/shapes', num=200, fmt='voc', seed=0)   # also 'coco', 'txt', 'all'; style='hard'

The command-line front end is ``tools/dataset_converters/make_shapes.py``.
"""
from __future__ import annotations

import functools
import json
import math
import multiprocessing as mp
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence
from xml.sax.saxutils import escape

import cv2
import numpy as np

__all__ = ['SHAPE_CLASSES', 'HARD_SHAPE_CLASSES', 'STYLE_CLASSES', 'SHAPE_STYLES', 'ShapeSample',
           'draw_shapes_image', 'generate_shapes', 'write_shapes', 'shapes_dataset_cfg', 'shape_classes']

SHAPE_CLASSES: tuple[str, ...] = ('circle', 'square', 'triangle', 'star')
# silhouettes that stay distinct at ~20 px: a solid oval, a plus, an annulus (the hole tells it from the oval)
# and a shaft with a head
HARD_SHAPE_CLASSES: tuple[str, ...] = ('ellipse', 'cross', 'ring', 'heart')
STYLE_CLASSES: dict[str, tuple[str, ...]] = {'simple': SHAPE_CLASSES, 'hard': HARD_SHAPE_CLASSES}
SHAPE_STYLES: tuple[str, ...] = tuple(STYLE_CLASSES)

# hard style geometry (see the module docstring)
HARD_SIDE_RANGE: tuple[float, float] = (0.7, 1.5)  # image sides as fractions of ``size``
HARD_ASPECT_RANGE: tuple[float, float] = (0.6, 1.7)  # width / height
HARD_EXTENT_RANGE: tuple[float, float] = (0.10, 0.45)  # longer side of an unoccluded box / the image's short side


@dataclass
class ShapeSample:
    """One generated image.

    Attributes:
        name: file stem, ``'<split>_<index:06d>'``.
        image: BGR uint8 ``(h, w, 3)``; ``(size, size, 3)`` in the simple style.
        bboxes: ``(n, 4)`` float32 integer-valued boxes ``x1, y1, x2, y2`` in pixels of ``image``.
        labels: ``(n,)`` int64 indices into the style's classes (:data:`STYLE_CLASSES`).
    """

    name: str
    image: np.ndarray
    bboxes: np.ndarray
    labels: np.ndarray


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if kind == 'square':
        k, radii, base = 4, [r], math.pi / 4
    elif kind == 'triangle':
        k, radii, base = 3, [r], -math.pi / 2
    else:  # star: 5 outer and 5 inner vertices
        k, radii, base = 10, [r, 0.45 * r], -math.pi / 2
    pts = []
    for j in range(k):
        a = base + angle + 2 * math.pi * j / k
        rad = radii[j % len(radii)]
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return np.round(np.array(pts)).astype(np.int32)


def _draw_mask(kind: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    # LINE_8 (no anti-aliasing): the mask is exactly the set of painted pixels, so the box is tight
    if kind == 'circle':
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(r)), 255, -1, cv2.LINE_8)
    else:
        cv2.fillPoly(mask, [_polygon(kind, cx, cy, r, angle)], 255, cv2.LINE_8)
    return mask


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    # smooth colour blobs (a 4x4 random field upsampled) around a random base colour
    base = rng.integers(40, 216, size=3)
    field = rng.normal(0, 45, size=(4, 4, 3)).astype(np.float32)
    field = cv2.resize(field, (size, size), interpolation=cv2.INTER_CUBIC)
    img = np.clip(base[None, None] + field, 0, 255).astype(np.uint8)
    # distractor lines and dots: clutter the detector must learn to ignore
    for _ in range(int(rng.integers(2, 8))):
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        p2 = tuple(int(v) for v in rng.integers(0, size, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.line(img, p1, p2, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 10))):
        c = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(img, c, int(rng.integers(1, 4)), tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    return img


def _object_colour(rng: np.random.Generator, region_mean: np.ndarray) -> tuple[int, int, int]:
    colour = rng.integers(0, 256, 3)
    for _ in range(20):  # keep the object visible against its surroundings
        if np.linalg.norm(colour - region_mean) > 90:
            break
        colour = rng.integers(0, 256, 3)
    return tuple(int(v) for v in colour)


def draw_shapes_image(rng: np.random.Generator, size: int = 320, num_classes: int | None = None,
                      max_objects: int = 5, min_visible: float = 0.6, noise: bool = True,
                      style: str = 'simple') -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image.

    Args:
        rng: the random generator (the image is a pure function of its state).
        size: the image side in pixels (simple); the nominal side (hard: sides drawn in
            :data:`HARD_SIDE_RANGE` ``x size``).
        num_classes: how many of the style's classes to use (default: all of them).
        max_objects: at most this many objects (at least 1).
        min_visible: every object keeps at least this fraction of its pixels visible under later objects.
        noise: add Gaussian pixel noise at the end; off only to test box tightness exactly.
        style: ``'simple'`` or ``'hard'``.

    Returns:
        ``(image, bboxes, labels)``: BGR uint8 ``(h, w, 3)`` (``h = w = size`` in the simple style), ``(n, 4)``
        float32 tight boxes ``x1, y1, x2, y2`` of the visible pixels (integer-valued, in pixels of ``image``),
        ``(n,)`` int64 labels into ``STYLE_CLASSES[style]``.
    """
    num_classes = len(shape_classes(style, num_classes))
    if style == 'simple':
        return _draw_simple(rng, size, num_classes, max_objects, min_visible, noise)
    return _draw_hard(rng, size, num_classes, max_objects, min_visible, noise)


def _draw_simple(rng: np.random.Generator, size: int, num_classes: int, max_objects: int, min_visible: float,
                 noise: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # frozen: the quickstart's published numbers depend on these exact draws (see tests/datasets/test_shapes.py)
    img = _background(rng, size)
    masks: list[np.ndarray] = []
    labels: list[int] = []
    colours: list[tuple[int, int, int]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            label = int(rng.integers(0, num_classes))
            kind = SHAPE_CLASSES[label]
            r = rng.uniform(0.07, 0.22) * size  # object extent 14%..44% of the image side
            cx, cy = rng.uniform(r, size - r, size=2)
            angle = rng.uniform(-math.pi / 12, math.pi / 12) if kind == 'square' else rng.uniform(0, 2 * math.pi)
            mask = _draw_mask(kind, size, cx, cy, r, angle) > 0
            if all((m & ~mask).sum() >= min_visible * m.sum() for m in masks):
                masks = [m & ~mask for m in masks]  # earlier objects lose what the new one covers
                masks.append(mask)
                labels.append(label)
                colours.append(_object_colour(rng, img[mask].mean(axis=0)))
                break
    # paint in order; each object's visible mask already excludes what later objects cover
    for mask, colour in zip(masks, colours):
        img[mask] = colour
    if noise:
        noise_sigma = rng.uniform(2, 10)
        img = np.clip(img + rng.normal(0, noise_sigma, img.shape), 0, 255).astype(np.uint8)
    boxes = []
    for mask in masks:
        x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
        boxes.append((x, y, x + w, y + h))
    return img, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


# ----------------------------------------------------------------------------------------------- hard style

_SHIFT = 4  # fillPoly sub-pixel bits: vertices on a 1/16 px grid, so small rotated shapes keep their form


def _hard_image_shape(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """``(h, w)``: sides uniform in ``HARD_SIDE_RANGE x size``, redrawn until ``w / h`` is in ``HARD_ASPECT_RANGE``."""
    lo, hi = round(HARD_SIDE_RANGE[0] * size), round(HARD_SIDE_RANGE[1] * size)
    while True:  # ~85% of draws are accepted; the loop is part of the deterministic stream
        w, h = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        if HARD_ASPECT_RANGE[0] <= w / h <= HARD_ASPECT_RANGE[1]:
            return h, w


def _unit_circle(n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _hard_contours(kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    """The shape's contours ``[(k, 2)]`` in local units around the origin, before rotation and scaling.

    Each shape's proportions are drawn within limits that keep it recognisable at ~20 px: the ellipse is clearly
    elongated, the ring's wall and hole are each at least a few pixels wide, the heart's lobes
    stay apart. Several contours are filled even-odd (the ring's inner circle is its hole).
    """
    if kind == 'ellipse':
        return [_unit_circle() * np.array([1.0, rng.uniform(0.45, 0.75)])]
    if kind == 'cross':
        t = rng.uniform(0.17, 0.25)  # arm half-width; the arms span -1..1
        return [np.array([(t, t), (1, t), (1, -t), (t, -t), (t, -1), (-t, -1), (-t, -t), (-1, -t), (-1, t),
                          (-t, t), (-t, 1), (t, 1)])]
    if kind == 'ring':
        return [_unit_circle(), _unit_circle() * rng.uniform(0.45, 0.62)]
    # heart: the classic curve, point down before rotation. It replaced an arrow, which the quickstart SSD
    # confused with the ellipse (arrow AP 0.24..0.45 whatever the shaft and head proportions)
    t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)) / 16
    return [np.stack([np.sin(t) ** 3, y], axis=1)]


def _poly_mask(contours: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    # LINE_8 (no anti-aliasing): the mask is exactly the set of painted pixels, so the box is tight
    mask = np.zeros(shape, np.uint8)
    pts = [np.round(c * (1 << _SHIFT)).astype(np.int32) for c in contours]
    cv2.fillPoly(mask, pts, 1, cv2.LINE_8, _SHIFT)
    return mask > 0


def _hard_object(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    """The full (unoccluded) mask ``(h, w)`` of one object placed wholly inside the image."""
    short = min(h, w)
    lo, hi = HARD_EXTENT_RANGE
    # extent**2 uniform (as many objects per unit of box area): uniform extents gave a quarter of the objects
    # under 20% of the short side, mostly lost to a 192 px detector. Rasterising a shape whose float extent is
    # e - 1 paints e +- 1 pixels; the margins keep the box inside the 10%..45% range
    extent = math.sqrt(rng.uniform((lo * short + 1) ** 2, (hi * short - 1) ** 2))
    angle = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    contours = [c @ rot.T for c in _hard_contours(kind, rng)]
    lo_xy = np.min([c.min(axis=0) for c in contours], axis=0)
    hi_xy = np.max([c.max(axis=0) for c in contours], axis=0)
    scale = (extent - 1) / float((hi_xy - lo_xy).max())
    lo_xy, hi_xy = lo_xy * scale, hi_xy * scale
    # anywhere inside the image, touching the border included: nothing is cut off, so the box stays tight
    tx = rng.uniform(-lo_xy[0], w - 1 - hi_xy[0])
    ty = rng.uniform(-lo_xy[1], h - 1 - hi_xy[1])
    return _poly_mask([c * scale + (tx, ty) for c in contours], (h, w))


def _pattern(rng: np.random.Generator, h: int, w: int, kind: int) -> np.ndarray:
    """A ``(h, w)`` float32 pattern in ``[0, 1]``: stripes (1), a checkerboard (2) or a grid (3), at any angle."""
    period = rng.uniform(0.03, 0.15) * min(h, w)  # 7..48 px at the default size
    theta = rng.uniform(0, math.pi)
    phase_u, phase_v = rng.uniform(0, period, size=2)
    xx, yy = np.arange(w, dtype=np.float32)[None], np.arange(h, dtype=np.float32)[:, None]
    u = xx * math.cos(theta) + yy * math.sin(theta) + phase_u  # (h, w) by broadcasting
    v = -xx * math.sin(theta) + yy * math.cos(theta) + phase_v
    if kind == 1:
        if rng.random() < 0.5:  # soft (sinusoidal) or hard stripes
            return 0.5 + 0.5 * np.sin(2 * math.pi * u / period)
        return (np.floor(u / period) % 2).astype(np.float32)
    if kind == 2:
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    thickness = rng.uniform(1, 3)
    return ((u % period < thickness) | (v % period < thickness)).astype(np.float32)


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _random_point(rng: np.random.Generator, h: int, w: int) -> tuple[int, int]:
    return int(rng.integers(0, w)), int(rng.integers(0, h))


def _rotated_rect(rng: np.random.Generator, h: int, w: int, lo: float, hi: float) -> np.ndarray:
    short = min(h, w)
    box = ((float(rng.uniform(0, w)), float(rng.uniform(0, h))),
           (float(rng.uniform(lo, hi) * short), float(rng.uniform(lo, hi) * short)), float(rng.uniform(0, 180)))
    return np.round(cv2.boxPoints(box)).astype(np.int32)


def _blob(rng: np.random.Generator, h: int, w: int, lo: float, hi: float, max_points: int = 7) -> np.ndarray:
    """An irregular convex polygon (hull of 3..max_points points) of radius ``lo..hi x`` the short side."""
    r = rng.uniform(lo, hi) * min(h, w)
    centre = rng.uniform((0, 0), (w, h))
    pts = centre + rng.uniform(-r, r, size=(int(rng.integers(3, max_points + 1)), 2))
    return cv2.convexHull(np.round(pts).astype(np.int32))


def _hard_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Texture, patches and the distractor strokes that lie under the objects; BGR uint8 ``(h, w, 3)``."""
    short = min(h, w)
    # a smooth colour field under everything (the simple style's background, coarser or finer)
    base = rng.integers(30, 226, size=3).astype(np.float32)
    k = int(rng.integers(2, 7))
    field = rng.normal(0, rng.uniform(20, 50), size=(k, k, 3)).astype(np.float32)
    img = base + cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC)
    kind = int(rng.integers(0, 5))  # 0 smooth only, 1 stripes, 2 checkerboard, 3 grid, 4 noise texture
    if kind in (1, 2, 3):
        direction = rng.normal(size=3)
        offset = direction / np.linalg.norm(direction) * rng.uniform(25, 60)  # the second colour's distance
        img += _pattern(rng, h, w, kind)[..., None] * offset.astype(np.float32)
    elif kind == 4:
        cell = int(rng.integers(1, 9))  # grain from per-pixel to 8 px cells
        grain = rng.normal(0, rng.uniform(8, 22), size=(-(-h // cell), -(-w // cell), 3)).astype(np.float32)
        if rng.random() < 0.5:
            grain[...] = grain[..., :1]  # grey grain
        interp = cv2.INTER_NEAREST if rng.random() < 0.5 else cv2.INTER_LINEAR
        img += cv2.resize(grain, (w, h), interpolation=interp)
    img = np.clip(img, 0, 255).astype(np.uint8)
    # patches of other colours: rotated rectangles and angular polygons (3..5 corners), translucent so that the
    # texture shows through. Flat opaque rounded polygons were ellipses to a small detector (measured: the shipped
    # SSD recipe's ellipse AP 0.34 with half its false positives on them), which is not the clutter the issue meant
    for _ in range(int(rng.integers(0, 4))):
        pts = _rotated_rect(rng, h, w, 0.08, 0.5) if rng.random() < 0.5 else _blob(rng, h, w, 0.05, 0.25, 5)
        patch = np.zeros((h, w), np.uint8)
        cv2.fillPoly(patch, [pts], 1, cv2.LINE_8)
        alpha = rng.uniform(0.35, 0.75)
        inside = patch > 0
        img[inside] = (img[inside] * (1 - alpha) + np.array(_random_colour(rng)) * alpha).astype(np.uint8)
    # distractor strokes: thin and open, or closed but neither round nor plus-shaped, or far smaller than objects
    for _ in range(int(rng.integers(1, 5))):
        cv2.line(img, _random_point(rng, h, w), _random_point(rng, h, w), _random_colour(rng),
                 int(rng.integers(1, 4)), cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 3))):  # polylines: a random walk of 3..6 points
        steps = rng.uniform(-0.3, 0.3, size=(int(rng.integers(3, 7)), 2)) * short
        pts = np.round(np.cumsum(steps, axis=0) + rng.uniform((0, 0), (w, h))).astype(np.int32)
        cv2.polylines(img, [pts], False, _random_colour(rng), int(rng.integers(1, 4)), cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 3))):  # arcs of at most 250 degrees: never a closed ring
        axes = tuple(int(v) for v in rng.uniform(0.05, 0.3, size=2) * short)
        start = float(rng.uniform(0, 360))
        cv2.ellipse(img, _random_point(rng, h, w), axes, float(rng.uniform(0, 180)), start,
                    start + float(rng.uniform(40, 250)), _random_colour(rng), int(rng.integers(1, 4)), cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 3))):  # rectangle or triangle outlines
        pts = _rotated_rect(rng, h, w, 0.08, 0.4) if rng.random() < 0.5 else _blob(rng, h, w, 0.08, 0.2)[:3]
        cv2.polylines(img, [pts], True, _random_colour(rng), int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 7))):  # small blobs: at most half the smallest object's extent
        cv2.fillPoly(img, [_blob(rng, h, w, 0.008, 0.025)], _random_colour(rng), cv2.LINE_AA)
    return img


def _contrasting_colour(rng: np.random.Generator, surroundings: np.ndarray) -> tuple[int, int, int]:
    """A colour far from the mean of ``surroundings`` ``(N, 3)`` and from nearly all of its pixels.

    On a textured background the mean alone is not enough: a colour 90 away from the mean of black and white
    stripes can be one of the stripes. Of 30 draws, the first that passes is taken, else the most distinct one.
    """
    best, best_score = None, -1.0
    mean = surroundings.mean(axis=0)
    for _ in range(30):
        colour = rng.integers(0, 256, 3)
        near = float(np.quantile(np.linalg.norm(surroundings - colour, axis=1), 0.05))
        score = min(near / 80, float(np.linalg.norm(colour - mean)) / 100)
        if score >= 1:
            return tuple(int(v) for v in colour)
        if score > best_score:
            best, best_score = colour, score
    return tuple(int(v) for v in best)


def _draw_hard(rng: np.random.Generator, size: int, num_classes: int, max_objects: int, min_visible: float,
               noise: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = _hard_image_shape(rng, size)
    img = _hard_background(rng, h, w)
    masks: list[np.ndarray] = []  # visible masks
    labels: list[int] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            label = int(rng.integers(0, num_classes))
            mask = _hard_object(rng, HARD_SHAPE_CLASSES[label], h, w)
            if all((m & ~mask).sum() >= min_visible * m.sum() for m in masks):
                masks = [m & ~mask for m in masks]  # earlier objects lose what the new one covers
                masks.append(mask)
                labels.append(label)
                # painted at once, so the next object's colour is chosen against this one too
                x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
                around = img[max(0, y - 4):y + bh + 4:2, max(0, x - 4):x + bw + 4:2].reshape(-1, 3)
                img[mask] = _contrasting_colour(rng, around.astype(np.float32))
                break
    if noise:
        # float32 draws: a third of the time of float64 normals, the largest single cost of an image
        noise_sigma = np.float32(rng.uniform(2, 10))
        pixel_noise = rng.standard_normal(img.shape, dtype=np.float32)
        pixel_noise *= noise_sigma
        pixel_noise += img
        img = np.clip(pixel_noise, 0, 255, out=pixel_noise).astype(np.uint8)
    boxes = []
    for mask in masks:
        x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
        boxes.append((x, y, x + bw, y + bh))
    return img, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


# ---------------------------------------------------------------------------------------- generation, files

def shape_classes(style: str = 'simple', num_classes: int | None = None) -> tuple[str, ...]:
    """The first ``num_classes`` (default: all) classes of a style; raises ``ValueError`` on a bad argument."""
    if style not in STYLE_CLASSES:
        raise ValueError(f'shapes: style must be one of {SHAPE_STYLES}, got {style!r}')
    classes = STYLE_CLASSES[style]
    if num_classes is None:
        return classes
    if not 1 <= num_classes <= len(classes):
        raise ValueError(f'shapes: num_classes must be in 1..{len(classes)} for style {style!r}, got {num_classes}')
    return classes[:num_classes]


def _split_key(split: str) -> int:
    return zlib.crc32(split.encode('utf-8'))


_MIN_SIZE = {'simple': 32, 'hard': 64}  # hard: the smallest image side is 0.7 x size, its objects 10% of that


def generate_shapes(num: int, seed: int = 0, size: int = 320, split: str = 'train', num_classes: int | None = None,
                    max_objects: int = 5, style: str = 'simple') -> Iterator[ShapeSample]:
    """Yield ``num`` images of a split; image ``i`` depends only on ``(seed, split, i, style)``.

    Args:
        num: number of images.
        seed: random seed.
        size: image side in pixels (simple); nominal side (hard: sides in ``[0.7, 1.5] x size``).
        split: split name (mixed into the seed, so splits differ).
        num_classes: how many of the style's classes to use (default: all 4; 3 or 4 for a learnable task).
        max_objects: at most this many objects per image.
        style: ``'simple'`` or ``'hard'`` (see the module docstring).
    """
    shape_classes(style, num_classes)  # validates both
    if size < _MIN_SIZE[style]:
        raise ValueError(f'generate_shapes: size must be >= {_MIN_SIZE[style]} for style {style!r}, got {size}')
    for i in range(num):
        yield _make_sample(seed, split, i, size, num_classes, max_objects, style)


def _make_sample(seed: int, split: str, i: int, size: int, num_classes: int | None, max_objects: int,
                 style: str) -> ShapeSample:
    key = [seed, _split_key(split), i]
    if style != 'simple':  # the simple style's seed stays as it was; other styles get streams of their own
        key.append(zlib.crc32(style.encode('utf-8')))
    rng = np.random.default_rng(key)
    img, boxes, labels = draw_shapes_image(rng, size, num_classes, max_objects, style=style)
    return ShapeSample(f'{split}_{i:06d}', img, boxes, labels)


def _voc_xml(sample: ShapeSample, classes: Sequence[str]) -> str:
    h, w = sample.image.shape[:2]
    objs = []
    for (x1, y1, x2, y2), label in zip(sample.bboxes.astype(int).tolist(), sample.labels.tolist()):
        # VOC stores 1-based inclusive pixel indices: continuous (x1, x2) -> (x1 + 1, x2)
        objs.append(f'  <object>\n    <name>{escape(classes[label])}</name>\n    <pose>Unspecified</pose>\n'
                    f'    <truncated>0</truncated>\n    <difficult>0</difficult>\n    <bndbox>\n'
                    f'      <xmin>{x1 + 1}</xmin>\n      <ymin>{y1 + 1}</ymin>\n      <xmax>{x2}</xmax>\n'
                    f'      <ymax>{y2}</ymax>\n    </bndbox>\n  </object>\n')
    return (f'<annotation>\n  <folder>shapes</folder>\n  <filename>{sample.name}.jpg</filename>\n'
            f'  <size>\n    <width>{w}</width>\n    <height>{h}</height>\n    <depth>3</depth>\n  </size>\n'
            f'  <segmented>0</segmented>\n{"".join(objs)}</annotation>\n')


_CHUNK = 50  # images per task of the worker pool


def _write_chunk(indices: range, *, out_dir: str, formats: Sequence[str], classes: Sequence[str], seed: int,
                 size: int, split: str, max_objects: int, jpeg_quality: int, style: str
                 ) -> list[tuple[str, tuple[int, int], list[list[int]], list[int]]]:
    """Draw, encode and write images ``indices`` (and their VOC XML); return ``(name, (h, w), boxes, labels)``."""
    out = []
    img_dirs = sorted({'JPEGImages' if f == 'voc' else 'images' for f in formats})
    for i in indices:
        sample = _make_sample(seed, split, i, size, len(classes), max_objects, style)
        ok, encoded = cv2.imencode('.jpg', sample.image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:
            raise RuntimeError(f'write_shapes: JPEG encoding failed for {sample.name}')
        for d in img_dirs:
            encoded.tofile(os.path.join(out_dir, d, f'{sample.name}.jpg'))
        if 'voc' in formats:
            with open(os.path.join(out_dir, 'Annotations', f'{sample.name}.xml'), 'w') as f:
                f.write(_voc_xml(sample, classes))
        out.append((sample.name, sample.image.shape[:2], sample.bboxes.astype(int).tolist(), sample.labels.tolist()))
    return out


def write_shapes(out_dir: str, num: int, fmt: str = 'voc', seed: int = 0, size: int = 320, split: str = 'train',
                 num_classes: int | None = None, max_objects: int = 5, jpeg_quality: int = 95,
                 workers: int = 1, style: str = 'simple') -> dict:
    """Write a shapes dataset in one of the formats detkit reads (or ``'all'`` three).

    Layouts under ``out_dir`` (image files are identical across formats)::

        voc:  JPEGImages/<name>.jpg, Annotations/<name>.xml, ImageSets/Main/<split>.txt
        coco: images/<name>.jpg, annotations/instances_<split>.json   (category ids 1..C)
        txt:  images/<name>.jpg, <split>.txt                          ("images/<name>.jpg x1,y1,x2,y2,cls ...")

    plus ``classes.txt`` (one name per line). The VOC XML and the COCO json give each image's own width and
    height (hard-style images are not square).

    Args:
        out_dir: output folder (created).
        num: number of images.
        fmt: ``'voc'``, ``'coco'``, ``'txt'`` or ``'all'``.
        seed: random seed.
        size: image side in pixels (simple); nominal side (hard: sides in ``[0.7, 1.5] x size``).
        split: split name.
        num_classes: how many of the style's classes to use (default: all).
        max_objects: at most this many objects per image.
        jpeg_quality: JPEG quality of the written images.
        workers: processes that draw and encode the images (the files are the same for any number).
        style: ``'simple'`` or ``'hard'`` (see the module docstring).

    Returns:
        ``dict(classes=..., num_images=..., num_boxes=..., configs={fmt: dataset config dict})``; each config
        builds the written dataset (without a pipeline) with :func:`detkit.datasets.build_dataset`.
    """
    if workers < 1:
        raise ValueError(f'write_shapes: workers must be >= 1, got {workers}')
    formats = ('voc', 'coco', 'txt') if fmt == 'all' else (fmt,)
    for f in formats:
        if f not in ('voc', 'coco', 'txt'):
            raise ValueError(f"write_shapes: fmt must be 'voc', 'coco', 'txt' or 'all', got {fmt!r}")
    classes = shape_classes(style, num_classes)
    if size < _MIN_SIZE[style]:
        raise ValueError(f'write_shapes: size must be >= {_MIN_SIZE[style]} for style {style!r}, got {size}')
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'classes.txt'), 'w') as f:
        f.write('\n'.join(classes) + '\n')
    dirs = {'voc': ['JPEGImages', 'Annotations', 'ImageSets/Main'], 'coco': ['images', 'annotations'],
            'txt': ['images']}
    for f in formats:
        for d in dirs[f]:
            os.makedirs(os.path.join(out_dir, d), exist_ok=True)

    ids, txt_lines = [], []
    coco = dict(images=[], annotations=[], categories=[dict(id=i + 1, name=c, supercategory='shape')
                                                        for i, c in enumerate(classes)])
    num_boxes = 0
    chunks = [range(start, min(num, start + _CHUNK)) for start in range(0, num, _CHUNK)]
    job = functools.partial(_write_chunk, out_dir=out_dir, formats=formats, classes=classes, seed=seed, size=size,
                            split=split, max_objects=max_objects, jpeg_quality=jpeg_quality, style=style)
    if workers > 1 and len(chunks) > 1:
        # spawn: a forked child of a process that has run OpenCV's or torch's thread pools may deadlock
        with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=mp.get_context('spawn')) as pool:
            written = [item for chunk in pool.map(job, chunks) for item in chunk]
    else:
        written = [item for chunk in map(job, chunks) for item in chunk]
    for i, (name, (h, w), boxes, labels) in enumerate(written):  # in index order, whatever the workers
        num_boxes += len(boxes)
        ids.append(name)
        coco['images'].append(dict(id=i + 1, file_name=f'{name}.jpg', width=w, height=h))
        for (x1, y1, x2, y2), label in zip(boxes, labels):
            coco['annotations'].append(dict(id=len(coco['annotations']) + 1, image_id=i + 1, category_id=label + 1,
                                            bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1),
                                            iscrowd=0))
        txt_lines.append(' '.join([f'images/{name}.jpg'] + [f'{x1},{y1},{x2},{y2},{label}' for
                                                             (x1, y1, x2, y2), label in zip(boxes, labels)]))
    if 'voc' in formats:
        with open(os.path.join(out_dir, 'ImageSets', 'Main', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(ids) + '\n')
    if 'coco' in formats:
        with open(os.path.join(out_dir, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(coco, f)
    if 'txt' in formats:
        with open(os.path.join(out_dir, f'{split}.txt'), 'w') as f:
            f.write('\n'.join(txt_lines) + '\n')
    configs = {f: shapes_dataset_cfg(out_dir, f, split, num_classes, style) for f in formats}
    return dict(classes=classes, num_images=num, num_boxes=num_boxes, configs=configs)


def shapes_dataset_cfg(out_dir: str, fmt: str = 'voc', split: str = 'train', num_classes: int | None = None,
                       style: str = 'simple') -> dict:
    """The dataset config (no pipeline) for a shapes dataset written by :func:`write_shapes`.

    Args:
        out_dir: the folder given to :func:`write_shapes`.
        fmt: ``'voc'``, ``'coco'`` or ``'txt'``.
        split: split name.
        num_classes: how many of the style's classes were written (default: all).
        style: the style written, which names the classes.
    """
    classes = shape_classes(style, num_classes)
    if fmt == 'voc':
        return dict(type='VOCDataset', data_root=out_dir, ann_file=f'ImageSets/Main/{split}.txt',
                    data_prefix=dict(sub_data_root=''), classes=classes)
    if fmt == 'coco':
        return dict(type='CocoDataset', data_root=out_dir, ann_file=f'annotations/instances_{split}.json',
                    data_prefix=dict(img='images/'), classes=classes)
    if fmt == 'txt':
        return dict(type='TxtDataset', data_root=out_dir, ann_file=f'{split}.txt', data_prefix=dict(img=''),
                    classes=classes)
    raise ValueError(f"shapes_dataset_cfg: fmt must be 'voc', 'coco' or 'txt', got {fmt!r}")
