#!/usr/bin/env python
"""Write a synthetic shapes detection dataset in VOC, COCO or TXT layout.

Two styles: ``simple`` (circles, squares, triangles, stars on smooth backgrounds; the quickstart's data) and
``hard`` (ellipses, crosses, rings, hearts on textured, cluttered backgrounds, images of varied sizes and
aspect ratios, objects at 10%..45% of the short side).

Example::

    python tools/dataset_converters/make_shapes.py --out data/shapes --num 400 --format voc --seed 0
    python tools/dataset_converters/make_shapes.py --out data/shapes --num 100 --format voc --seed 0 --split val
    python tools/dataset_converters/make_shapes.py --out data/shapes_hard --num 400 --style hard

The same seed and split give the same images and boxes in every format; see detkit.synthetic.shapes.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from detkit.synthetic.shapes import STYLE_CLASSES, write_shapes  # noqa: E402
from detkit.utils.errors import run_tool  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='output folder (created)')
    parser.add_argument('--num', type=int, required=True, help='number of images')
    parser.add_argument('--format', choices=('voc', 'coco', 'txt', 'all'), default='voc', help='annotation layout')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--style', choices=tuple(STYLE_CLASSES), default='simple',
                        help='simple: ' + ', '.join(STYLE_CLASSES['simple']) + '; hard: '
                             + ', '.join(STYLE_CLASSES['hard']) + ' on cluttered backgrounds, varied image sizes')
    parser.add_argument('--size', type=int, default=320,
                        help='image side in pixels (simple); hard: sides drawn in [0.7, 1.5] x SIZE')
    parser.add_argument('--split', default='train', help='split name (train, val, test, ...)')
    parser.add_argument('--num-classes', type=int, default=None,
                        help="use the first N of the style's classes (default: all 4)")
    parser.add_argument('--max-objects', type=int, default=5, help='at most this many objects per image')
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1),
                        help='processes drawing the images (default: the cores, at most 8); any number writes '
                             'the same files')
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f'--num must be >= 1, got {args.num}')
    if args.workers < 1:
        parser.error(f'--workers must be >= 1, got {args.workers}')
    num_style_classes = len(STYLE_CLASSES[args.style])
    if args.num_classes is not None and not 1 <= args.num_classes <= num_style_classes:
        parser.error(f'--num-classes must be in 1..{num_style_classes}, got {args.num_classes}')
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    info = write_shapes(args.out, args.num, args.format, seed=args.seed, size=args.size, split=args.split,
                        num_classes=args.num_classes, max_objects=args.max_objects, workers=args.workers,
                        style=args.style)
    print(f'wrote {info["num_images"]} images with {info["num_boxes"]} boxes of {len(info["classes"])} classes '
          f'{info["classes"]} to {args.out} ({args.format}, style {args.style}, split {args.split!r}, '
          f'seed {args.seed})')
    for fmt, cfg in info['configs'].items():
        print(f'{fmt} dataset config: {cfg}')


if __name__ == '__main__':
    run_tool(main)
