"""Training-step time: detkit's SSD300-VGG16 against torchvision's ``ssd300_vgg16`` on the same batch.

    python benchmarks/bench_train.py                       # CPU, batch 8, median of 10 steps after 2 warm-up steps
    python benchmarks/bench_train.py --device cuda --iters 50 --json results.json

One step = forward + loss + backward + SGD update on a batch of random 300x300 images with random boxes; data loading
is excluded. torchvision's step includes its built-in normalisation/resize transform (part of its model), detkit's
input is already normalised (the data pipeline does that). Both models start from random weights.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def random_batch(batch_size: int, num_classes: int, size: int = 300, seed: int = 0
                 ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Images ``Tensor[N, 3, size, size]`` in [0, 1], and per image 1..6 boxes (x1, y1, x2, y2 pixels) with labels
    ``0..num_classes-1``."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, size, size, generator=g)
    boxes, labels = [], []
    for _ in range(batch_size):
        n = int(torch.randint(1, 7, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * (size - 40)
        wh = 20 + torch.rand(n, 2, generator=g) * (size / 2)
        boxes.append(torch.cat([xy, (xy + wh).clamp(max=size)], 1))
        labels.append(torch.randint(0, num_classes, (n,), generator=g))
    return images, boxes, labels


def time_steps(step: Callable[[], None], iters: int, warmup: int, device: torch.device) -> list[float]:
    def sync() -> None:
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        sync()
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    return times


def detkit_step(config: str, images: torch.Tensor, boxes: list[torch.Tensor], labels: list[torch.Tensor],
                device: torch.device) -> tuple[Callable[[], None], int]:
    from detkit.engine.trainer import sum_losses  # noqa: PLC0415
    from detkit.registry import MODELS  # noqa: PLC0415
    from detkit.utils import load_config  # noqa: PLC0415

    cfg = load_config(config)
    model = MODELS.build(cfg.model).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    # caffe-style VGG input, as in the SSD300 config: RGB 0..255 minus the mean
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    x = (images * 255 - mean).to(device)
    targets = [dict(boxes=b.to(device), labels=lab.to(device), ignore_boxes=torch.zeros(0, 4, device=device))
               for b, lab in zip(boxes, labels)]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        total, _ = sum_losses(model.loss(x, targets))
        total.backward()
        optimizer.step()

    return step, sum(p.numel() for p in model.parameters())


def torchvision_step(images: torch.Tensor, boxes: list[torch.Tensor], labels: list[torch.Tensor], num_classes: int,
                     device: torch.device) -> tuple[Callable[[], None], int]:
    from torchvision.models.detection import ssd300_vgg16  # noqa: PLC0415

    model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes + 1).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    x = [img.to(device) for img in images]
    # torchvision reserves label 0 for the background
    targets = [dict(boxes=b.to(device), labels=(lab + 1).to(device)) for b, lab in zip(boxes, labels)]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = sum(model(x, targets).values())
        loss.backward()
        optimizer.step()

    return step, sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--config', default=os.path.join(ROOT, 'configs/ssd/ssd300_voc0712.py'),
                   help='detkit SSD300 config (built with MODELS)')
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--iters', type=int, default=10, help='timed steps')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps first')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s choice)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--json', help='also write the results to this JSON file')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if not os.path.isfile(args.config):
        raise SystemExit(f'config not found: {args.config} (the SSD300 config comes with detkit.models)')
    num_classes = 20  # VOC
    images, boxes, labels = random_batch(args.batch_size, num_classes)

    results = {}
    for name, make in (('detkit', lambda: detkit_step(args.config, images, boxes, labels, device)),
                       ('torchvision', lambda: torchvision_step(images, boxes, labels, num_classes, device))):
        torch.manual_seed(0)
        step, n_params = make()
        times = time_steps(step, args.iters, args.warmup, device)
        results[name] = dict(median_s=statistics.median(times), min_s=min(times), params=n_params, times_s=times)
        print(f'{name:12s} median {results[name]["median_s"] * 1000:8.1f} ms/step   min {min(times) * 1000:8.1f} ms   '
              f'{n_params:,} parameters')
        del step
    ratio = results['detkit']['median_s'] / results['torchvision']['median_s']
    print(f'detkit / torchvision step time: {ratio:.3f} (< 1: detkit is faster)')
    summary = dict(batch_size=args.batch_size, iters=args.iters, warmup=args.warmup, device=str(device),
                   threads=torch.get_num_threads(), torch=torch.__version__,
                   cpu=platform.processor() or platform.machine(), ratio_detkit_over_torchvision=ratio, **results)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == '__main__':
    main()
