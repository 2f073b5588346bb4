#!/usr/bin/env python
"""SSD training data pipeline: detkit (numpy/OpenCV) vs the same recipe in torchvision.transforms.v2.

Both pipelines start from the JPEG file and end with a normalised float32 CHW tensor plus boxes:

    detkit:      LoadImageFromFile -> LoadAnnotations -> PhotoMetricDistortion -> Expand -> MinIoURandomCrop
                 -> Resize 300x300 -> RandomFlip -> Normalize -> PackDetInputs
    torchvision: decode_jpeg -> RandomPhotometricDistort -> RandomZoomOut -> RandomIoUCrop -> Resize 300x300
                 -> RandomHorizontalFlip -> ToDtype(float32) -> Normalize -> SanitizeBoundingBoxes

on the same images (the 4 shared COCO photos and generated shapes images at 320 and 512 px) with the same boxes.
Rounds alternate between the two pipelines (the machine may be shared); medians over rounds are reported, with
the default thread settings and with one thread each (what a data-loader worker uses).

    python benchmarks/bench_data.py [--rounds 9] [--repeat 4]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detkit.datasets import generate_shapes  # noqa: E402
from detkit.datasets.transforms import Compose  # noqa: E402

MEAN = [123.675, 116.28, 103.53]
STD = [1.0, 1.0, 1.0]


def shared_images_dir() -> Path:
    """$DETKIT_SHARED_DATA(/images), <repo>/../shared/data/images, or /work/shared/data/images."""
    repo = Path(__file__).resolve().parents[1]
    env = os.environ.get('DETKIT_SHARED_DATA')
    tried = ([Path(env) / 'images', Path(env)] if env else []) + [repo.parent / 'shared' / 'data' / 'images',
                                                                  Path('/work/shared/data/images')]
    for p in tried:
        if p.is_dir() and any(p.glob('*.jpg')):
            return p
    raise SystemExit('shared images not found; tried ' + ', '.join(map(str, tried)))


def make_inputs(tmp: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(jpeg path, (n, 4) boxes in original-image pixels, (n,) labels) for every benchmark image."""
    rng = np.random.default_rng(0)
    items = []
    for path in sorted(shared_images_dir().glob('*.jpg')):
        h, w = cv2.imread(str(path)).shape[:2]
        n = 4
        xy = rng.uniform(0, 0.6, (n, 2)) * [w, h]
        wh = rng.uniform(0.15, 0.4, (n, 2)) * [w, h]
        items.append((str(path), np.hstack([xy, xy + wh]).astype(np.float32), rng.integers(0, 20, n)))
    for size in (320, 512):
        for s in generate_shapes(4, seed=size, size=size, split='bench'):
            path = os.path.join(tmp, f'{s.name}_{size}.jpg')
            cv2.imwrite(path, s.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            items.append((path, s.bboxes, s.labels))
    return items


def detkit_pipeline() -> Compose:
    return Compose([
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PhotoMetricDistortion'),
        dict(type='Expand', mean=MEAN, to_rgb=True, ratio_range=(1, 4), prob=0.5), dict(type='MinIoURandomCrop'),
        dict(type='Resize', scale=(300, 300), keep_ratio=False), dict(type='RandomFlip', prob=0.5),
        dict(type='Normalize', mean=MEAN, std=STD, to_rgb=True), dict(type='PackDetInputs')])


def run_detkit(pipeline: Compose, items) -> int:
    n = 0
    for path, boxes, labels in items:
        out = pipeline(dict(img_path=path, ann_info=dict(bboxes=boxes, labels=labels)))
        n += out['inputs'].shape[0] > 0
    return n


def torchvision_pipeline(antialias: bool = True):
    from torchvision.transforms import v2
    return v2.Compose([
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill=tuple(int(round(m)) for m in MEAN),
                         side_range=(1.0, 4.0), p=0.5),
        v2.RandomIoUCrop(),
        v2.Resize((300, 300), antialias=antialias),
        v2.RandomHorizontalFlip(p=0.5),
        v2.ToDtype(torch.float32, scale=False),
        v2.Normalize(mean=MEAN, std=STD),
        v2.SanitizeBoundingBoxes(),
    ])


def run_torchvision(pipeline, items) -> int:
    from torchvision import tv_tensors
    from torchvision.io import decode_jpeg, read_file
    n = 0
    for path, boxes, labels in items:
        img = decode_jpeg(read_file(path))  # uint8 (3, H, W) RGB
        h, w = img.shape[1:]
        sample = dict(image=tv_tensors.Image(img),
                      boxes=tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format='XYXY', canvas_size=(h, w)),
                      labels=torch.from_numpy(np.asarray(labels)))
        out = pipeline(sample)
        n += out['image'].shape[0] > 0
    return n


def stage_profile(items, repeat: int) -> list[tuple[str, float]]:
    """Median ms per image of each detkit transform (run inside the full pipeline)."""
    pipeline = detkit_pipeline()
    times: dict[str, list[float]] = {repr(t).split('(')[0]: [] for t in pipeline.transforms}
    np.random.seed(1)
    for _ in range(repeat):
        for path, boxes, labels in items:
            results = dict(img_path=path, ann_info=dict(bboxes=boxes, labels=labels))
            for t in pipeline.transforms:
                t0 = time.perf_counter()
                results = t(results)
                times[repr(t).split('(')[0]].append((time.perf_counter() - t0) * 1e3)
    return [(k, statistics.median(v)) for k, v in times.items()]


def bench(items, rounds: int, repeat: int, label: str) -> tuple[float, float]:
    dk, tv = detkit_pipeline(), torchvision_pipeline()
    work = items * repeat
    run_detkit(dk, items)  # warm up (imports, caches)
    run_torchvision(tv, items)
    dk_rates, tv_rates = [], []
    for r in range(rounds):
        np.random.seed(r)
        torch.manual_seed(r)
        t0 = time.perf_counter()
        run_detkit(dk, work)
        dk_rates.append(len(work) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        run_torchvision(tv, work)
        tv_rates.append(len(work) / (time.perf_counter() - t0))
    dk_med, tv_med = statistics.median(dk_rates), statistics.median(tv_rates)
    print(f'| {label:<32} | {dk_med:9.1f} | {tv_med:12.1f} | {dk_med / tv_med:5.2f}x |')
    return dk_med, tv_med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=9, help='timed rounds per pipeline (median reported)')
    parser.add_argument('--repeat', type=int, default=4, help='passes over the images per round')
    args = parser.parse_args()
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')),
               platform.processor())
    import torchvision
    print(f'machine: {os.cpu_count()} CPUs ({cpu}); torch {torch.__version__}, torchvision {torchvision.__version__}, '
          f'opencv {cv2.__version__}, numpy {np.__version__}')
    with tempfile.TemporaryDirectory() as tmp:
        items = make_inputs(tmp)
        sizes = sorted({cv2.imread(p).shape[:2] for p, _, _ in items})
        print(f'inputs: {len(items)} JPEGs {sizes}, {args.rounds} rounds x {args.repeat} passes, images/s medians')
        print('| setting                          | detkit    | torchvision  | ratio  |')
        print('|----------------------------------|-----------|--------------|--------|')
        default_threads = (torch.get_num_threads(), cv2.getNumThreads())
        bench(items, args.rounds, args.repeat, f'default threads (torch {default_threads[0]}, cv2 '
                                               f'{default_threads[1]})')
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        bench(items, args.rounds, args.repeat, '1 thread each (as a worker)')
        print('\ndetkit stage profile (1 thread, median ms per image):')
        for name, ms in stage_profile(items, 2):
            print(f'  {name:<24} {ms:7.3f}')


if __name__ == '__main__':
    main()
