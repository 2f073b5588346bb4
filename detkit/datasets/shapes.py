"""Synthetic "shapes" detection data: coloured circles, squares, triangles and stars on cluttered backgrounds.

Small, deterministic and learnable: a quickstart trains a small SSD on it in CPU minutes, and tests use it to
check that the VOC, COCO and TXT loaders read identical boxes. Boxes are **tight** around the visible pixels of
each shape (occluded parts excluded), in integer original-image pixels ``x1, y1, x2, y2`` with ``x2`` one past
the last column (continuous coordinates, no +1).

Image ``i`` of a split depends only on ``(seed, split, i)``, so the same seed gives the same images and boxes
whatever the number of images or the output format, and different splits never share images.

API::

    for sample in generate_shapes(num=100, seed=0, size=320, split='train'):
        sample.image, sample.bboxes, sample.labels   # BGR uint8 (size, size, 3), (n, 4) float32, (n,) int64
    write_shapes('data/shapes', num=200, fmt='voc', seed=0)   # also 'coco', 'txt'

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

__all__ = ['SHAPE_CLASSES', 'ShapeSample', 'draw_shapes_image', 'generate_shapes', 'write_shapes',
           'shapes_dataset_cfg']

SHAPE_CLASSES: tuple[str, ...] = ('circle', 'square', 'triangle', 'star')


@dataclass
class ShapeSample:
    """One generated image.

    Attributes:
        name: file stem, ``'<split>_<index:06d>'``.
        image: BGR uint8 ``(size, size, 3)``.
        bboxes: ``(n, 4)`` float32 integer-valued boxes in pixels of ``image``.
        labels: ``(n,)`` int64 indices into :data:`SHAPE_CLASSES`.
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


def draw_shapes_image(rng: np.random.Generator, size: int = 320, num_classes: int = len(SHAPE_CLASSES),
                      max_objects: int = 5, min_visible: float = 0.6,
                      noise: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image.

    Args:
        rng: the random generator (the image is a pure function of its state).
        size: image side in pixels.
        num_classes: how many of :data:`SHAPE_CLASSES` to use.
        max_objects: at most this many objects (at least 1).
        min_visible: every object keeps at least this fraction of its pixels visible under later objects.
        noise: add Gaussian pixel noise (sigma 2..10) at the end; off only to test box tightness exactly.

    Returns:
        ``(image, bboxes, labels)``: BGR uint8 ``(size, size, 3)``, ``(n, 4)`` float32 tight boxes of the
        visible pixels (integer-valued, in pixels of ``image``), ``(n,)`` int64 labels.
    """
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


def _split_key(split: str) -> int:
    return zlib.crc32(split.encode('utf-8'))


def generate_shapes(num: int, seed: int = 0, size: int = 320, split: str = 'train',
                    num_classes: int = len(SHAPE_CLASSES), max_objects: int = 5) -> Iterator[ShapeSample]:
    """Yield ``num`` images of a split; image ``i`` depends only on ``(seed, split, i)``.

    Args:
        num: number of images.
        seed: random seed.
        size: image side in pixels.
        split: split name (mixed into the seed, so splits differ).
        num_classes: how many of :data:`SHAPE_CLASSES` to use (3 or 4 for a learnable task).
        max_objects: at most this many objects per image.
    """
    if not 1 <= num_classes <= len(SHAPE_CLASSES):
        raise ValueError(f'generate_shapes: num_classes must be in 1..{len(SHAPE_CLASSES)}, got {num_classes}')
    if size < 32:
        raise ValueError(f'generate_shapes: size must be >= 32, got {size}')
    for i in range(num):
        yield _make_sample(seed, split, i, size, num_classes, max_objects)


def _make_sample(seed: int, split: str, i: int, size: int, num_classes: int, max_objects: int) -> ShapeSample:
    rng = np.random.default_rng([seed, _split_key(split), i])
    img, boxes, labels = draw_shapes_image(rng, size, num_classes, max_objects)
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
                 size: int, split: str, max_objects: int, jpeg_quality: int
                 ) -> list[tuple[str, tuple[int, int], list[list[int]], list[int]]]:
    """Draw, encode and write images ``indices`` (and their VOC XML); return ``(name, (h, w), boxes, labels)``."""
    out = []
    img_dirs = sorted({'JPEGImages' if f == 'voc' else 'images' for f in formats})
    for i in indices:
        sample = _make_sample(seed, split, i, size, len(classes), max_objects)
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
                 num_classes: int = len(SHAPE_CLASSES), max_objects: int = 5, jpeg_quality: int = 95,
                 workers: int = 1) -> dict:
    """Write a shapes dataset in one of the formats detkit reads (or ``'all'`` three).

    Layouts under ``out_dir`` (image files are identical across formats)::

        voc:  JPEGImages/<name>.jpg, Annotations/<name>.xml, ImageSets/Main/<split>.txt
        coco: images/<name>.jpg, annotations/instances_<split>.json   (category ids 1..C)
        txt:  images/<name>.jpg, <split>.txt                          ("images/<name>.jpg x1,y1,x2,y2,cls ...")

    plus ``classes.txt`` (one name per line).

    Args:
        out_dir: output folder (created).
        num: number of images.
        fmt: ``'voc'``, ``'coco'``, ``'txt'`` or ``'all'``.
        seed: random seed.
        size: image side in pixels.
        split: split name.
        num_classes: how many shape classes to use.
        max_objects: at most this many objects per image.
        jpeg_quality: JPEG quality of the written images.
        workers: processes that draw and encode the images (the files are the same for any number).

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
    classes = SHAPE_CLASSES[:num_classes]
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
                            split=split, max_objects=max_objects, jpeg_quality=jpeg_quality)
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
    configs = {f: shapes_dataset_cfg(out_dir, f, split, num_classes) for f in formats}
    return dict(classes=classes, num_images=num, num_boxes=num_boxes, configs=configs)


def shapes_dataset_cfg(out_dir: str, fmt: str = 'voc', split: str = 'train',
                       num_classes: int = len(SHAPE_CLASSES)) -> dict:
    """The dataset config (no pipeline) for a shapes dataset written by :func:`write_shapes`."""
    classes = SHAPE_CLASSES[:num_classes]
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
