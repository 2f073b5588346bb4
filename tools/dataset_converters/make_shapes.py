#!/usr/bin/env python
"""Write a synthetic shapes detection dataset (circles, squares, triangles, stars) in VOC, COCO or TXT layout.

Example::

    python tools/dataset_converters/make_shapes.py --out data/shapes --num 400 --format voc --seed 0
    python tools/dataset_converters/make_shapes.py --out data/shapes --num 100 --format voc --seed 0 --split val

The same seed and split give the same images and boxes in every format; see detkit.datasets.shapes.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from detkit.datasets.shapes import SHAPE_CLASSES, write_shapes  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='output folder (created)')
    parser.add_argument('--num', type=int, required=True, help='number of images')
    parser.add_argument('--format', choices=('voc', 'coco', 'txt', 'all'), default='voc', help='annotation layout')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--size', type=int, default=320, help='image side in pixels')
    parser.add_argument('--split', default='train', help='split name (train, val, test, ...)')
    parser.add_argument('--num-classes', type=int, default=len(SHAPE_CLASSES),
                        help=f'use the first N of {SHAPE_CLASSES}')
    parser.add_argument('--max-objects', type=int, default=5, help='at most this many objects per image')
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1),
                        help='processes drawing the images (default: the cores, at most 8); any number writes '
                             'the same files')
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f'--num must be >= 1, got {args.num}')
    if args.workers < 1:
        parser.error(f'--workers must be >= 1, got {args.workers}')
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    info = write_shapes(args.out, args.num, args.format, seed=args.seed, size=args.size, split=args.split,
                        num_classes=args.num_classes, max_objects=args.max_objects, workers=args.workers)
    print(f'wrote {info["num_images"]} images with {info["num_boxes"]} boxes of {len(info["classes"])} classes '
          f'{info["classes"]} to {args.out} ({args.format}, split {args.split!r}, seed {args.seed})')
    for fmt, cfg in info['configs'].items():
        print(f'{fmt} dataset config: {cfg}')


if __name__ == '__main__':
    main()
