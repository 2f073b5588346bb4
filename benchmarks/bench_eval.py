#!/usr/bin/env python
"""Evaluation speed, two parts (``--parts map coco``, both by default).

``map``: eval_map on 5,000 images x 20 classes, detkit's vectorised version vs a plain per-image loop reference.
Synthetic VOC-like data: 1-6 ground-truth boxes per image (10% difficult), about 100 detections per image
(jittered true hits, duplicates and random false positives, spread over the classes), as an SSD outputs after
NMS with a low score threshold. Both implementations get the same arrays and must return the same mAP.

``coco``: ``CocoMetric`` with the pycocotools backend vs the faster-coco-eval backend on synthetic COCO-like data:
5,000 images, 30,000 ground-truth boxes (80 categories with COCO's non-contiguous ids, 1% crowd, sizes from 4 to
300 pixels) and 96,000 detections (jittered hits, wrong classes, false positives). Both must give the same 12
numbers and the same per-class table.

    python benchmarks/bench_eval.py [--parts map coco] [--images 5000] [--classes 20] [--rounds 3]
                                    [--coco-images 5000] [--coco-rounds 3]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detkit.evaluation import CocoMetric, average_precision, eval_map  # noqa: E402
from detkit.evaluation.metrics.coco_metric import STAT_NAMES, _coco_api  # noqa: E402
from detkit.structures.bbox_np import bbox_overlaps_np  # noqa: E402

#: the 80 category ids of COCO 2017 (1..90 with gaps)
COCO_CAT_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
                33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
                60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)


def make_data(num_images: int, num_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    det_results, annotations = [], []
    for _ in range(num_images):
        m = int(rng.integers(1, 7))
        xy = rng.uniform(0, 400, (m, 2))
        boxes = np.hstack([xy, xy + rng.uniform(20, 200, (m, 2))]).astype(np.float32)
        labels = rng.integers(0, num_classes, m)
        difficult = rng.random(m) < 0.1
        annotations.append(dict(bboxes=boxes[~difficult], labels=labels[~difficult], bboxes_ignore=boxes[difficult],
                                labels_ignore=labels[difficult]))
        n_hits = int(rng.integers(m, 3 * m + 1))
        src = rng.integers(0, m, n_hits)
        hits = boxes[src] + rng.normal(0, 12, (n_hits, 4))
        hit_labels = np.where(rng.random(n_hits) < 0.8, labels[src], rng.integers(0, num_classes, n_hits))
        n_fp = 100 - n_hits
        fxy = rng.uniform(0, 450, (n_fp, 2))
        fps = np.hstack([fxy, fxy + rng.uniform(10, 150, (n_fp, 2))])
        all_boxes = np.vstack([hits, fps]).astype(np.float32)
        all_boxes[:, 2:] = np.maximum(all_boxes[:, 2:], all_boxes[:, :2] + 1)
        all_labels = np.concatenate([hit_labels, rng.integers(0, num_classes, n_fp)])
        scores = np.concatenate([rng.uniform(0.3, 1.0, n_hits), rng.uniform(0.02, 0.6, n_fp)]).astype(np.float32)
        dets = np.hstack([all_boxes, scores[:, None]])
        det_results.append([dets[all_labels == c] for c in range(num_classes)])
    return det_results, annotations


def reference_eval_map(det_results, annotations, iou_thr=0.5, mode='area'):
    """The straightforward implementation: per class, per image, IoU matrix then a Python loop over dets."""
    num_classes = len(det_results[0])
    aps, has_gt = [], []
    for c in range(num_classes):
        tps, fps, scores, num_gts = [], [], [], 0
        for img_dets, ann in zip(det_results, annotations):
            d = img_dets[c]
            g = ann['bboxes'][ann['labels'] == c]
            gi = ann['bboxes_ignore'][ann['labels_ignore'] == c]
            num_gts += len(g)
            tp = np.zeros(len(d), np.float32)
            fp = np.zeros(len(d), np.float32)
            gts = np.vstack([g, gi])
            if len(gts) == 0:
                fp[:] = 1
            elif len(d):
                ignore = np.r_[np.zeros(len(g), bool), np.ones(len(gi), bool)]
                ious = bbox_overlaps_np(d[:, :4], gts)
                best, best_gt = ious.max(1), ious.argmax(1)
                covered = np.zeros(len(gts), bool)
                for i in np.argsort(-d[:, 4], kind='stable'):
                    if best[i] >= iou_thr:
                        j = best_gt[i]
                        if not ignore[j]:
                            if not covered[j]:
                                covered[j] = True
                                tp[i] = 1
                            else:
                                fp[i] = 1
                    else:
                        fp[i] = 1
            tps.append(tp)
            fps.append(fp)
            scores.append(d[:, 4])
        order = np.argsort(-np.concatenate(scores), kind='stable')
        tp = np.cumsum(np.concatenate(tps)[order], dtype=np.float64)
        fp = np.cumsum(np.concatenate(fps)[order], dtype=np.float64)
        recall = tp / max(num_gts, np.finfo(np.float32).eps)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float32).eps)
        aps.append(average_precision(recall, precision, mode))
        has_gt.append(num_gts > 0)
    return float(np.mean([a for a, h in zip(aps, has_gt) if h]))


def timed(fn, rounds):
    times, value = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def make_coco_data(num_images: int, num_gts: int, num_dets: int, seed: int = 0) -> tuple[dict, list[dict]]:
    """A COCO ground-truth dict and CocoMetric samples (original-image pixels) over :data:`COCO_CAT_IDS`."""
    rng = np.random.default_rng(seed)
    gts_per_image = rng.multinomial(num_gts, np.full(num_images, 1 / num_images))
    dets_per_image = rng.multinomial(num_dets, np.full(num_images, 1 / num_images))
    images, anns, samples = [], [], []
    for i in range(num_images):
        img_id = 10 * i + 3
        h, w = int(rng.integers(360, 640)), int(rng.integers(360, 640))
        images.append(dict(id=img_id, file_name=f'{img_id:012d}.jpg', height=h, width=w))
        m = int(gts_per_image[i])
        wh = np.exp(rng.uniform(np.log(4), np.log(300), (m, 2)))  # small, medium and large
        xy = rng.uniform(0, 1, (m, 2)) * np.maximum(np.array([w, h]) - wh, 1)
        gt = np.hstack([xy, xy + wh])
        labels = rng.integers(0, len(COCO_CAT_IDS), m)
        crowd = rng.random(m) < 0.01
        for (x1, y1, x2, y2), label, c in zip(gt.tolist(), labels, crowd):
            anns.append(dict(id=len(anns) + 1, image_id=img_id, category_id=COCO_CAT_IDS[label],
                             bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1), iscrowd=int(c)))
        k = int(dets_per_image[i])
        n_hits = min(k, m * 3 // 2)
        src = rng.integers(0, max(m, 1), n_hits)
        size = np.tile(wh[src], 2) if m else np.zeros((0, 4))
        hits = gt[src] + rng.normal(0, 0.08, (n_hits, 4)) * size if m else np.zeros((0, 4))
        hit_labels = np.where(rng.random(n_hits) < 0.85, labels[src], rng.integers(0, 80, n_hits)) if m else \
            np.zeros(0, np.int64)
        n_fp = k - n_hits
        fwh = np.exp(rng.uniform(np.log(4), np.log(300), (n_fp, 2)))
        fxy = rng.uniform(0, 1, (n_fp, 2)) * np.maximum(np.array([w, h]) - fwh, 1)
        boxes = np.vstack([hits, np.hstack([fxy, fxy + fwh])]).astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        samples.append(dict(img_id=img_id, ori_shape=(h, w), pred=dict(
            boxes=boxes, scores=np.concatenate([rng.uniform(0.2, 1, n_hits), rng.uniform(0.01, 0.7, n_fp)]).astype(
                np.float32), labels=np.concatenate([hit_labels, rng.integers(0, 80, n_fp)]).astype(np.int64))))
    categories = [dict(id=c, name=f'class_{c}') for c in COCO_CAT_IDS]
    return dict(images=images, annotations=anns, categories=categories), samples


def run_coco_metric(backend: str, ann_file: str, samples: list[dict]) -> tuple[float, dict[str, float], str]:
    """Seconds of one ``CocoMetric.evaluate`` (reading the ground truth included), its results and its table."""
    metric = CocoMetric(ann_file=ann_file, backend=backend)
    metric.dataset_meta = dict(classes=tuple(f'class_{c}' for c in COCO_CAT_IDS))
    metric.process(None, samples)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        t0 = time.perf_counter()
        results = metric.evaluate(len(samples))
        seconds = time.perf_counter() - t0
    text = printed.getvalue()
    return seconds, results, text[text.index('+--'):]


def run_cocoeval(backend: str, ann_file: str, dets: list[dict]) -> float:
    """Seconds of the backend's ``COCOeval.evaluate()`` + ``accumulate()`` alone (ground truth already indexed)."""
    coco_cls, cocoeval_cls = _coco_api(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_cls(ann_file)
        coco_eval = cocoeval_cls(coco_gt, coco_gt.loadRes([dict(d) for d in dets]), 'bbox')
        t0 = time.perf_counter()
        coco_eval.evaluate()
        coco_eval.accumulate()
        return time.perf_counter() - t0


def bench_coco(num_images: int, rounds: int) -> None:
    data, samples = make_coco_data(num_images, 6 * num_images, num_images * 96 // 5)
    n_dets = sum(len(s['pred']['boxes']) for s in samples)
    n_crowd = sum(a['iscrowd'] for a in data['annotations'])
    print(f'\ndata: {num_images} images, {len(data["annotations"])} ground-truth boxes ({n_crowd} crowd), '
          f'{n_dets} detections, {len(data["categories"])} categories (ids 1..90 with gaps); median of {rounds} '
          'rounds')
    with tempfile.TemporaryDirectory() as tmp:
        ann_file = os.path.join(tmp, 'instances_val.json')
        with open(ann_file, 'w') as f:
            json.dump(data, f)
        backends = ('pycocotools', 'faster_coco_eval')
        metric_times: dict[str, list[float]] = {b: [] for b in backends}
        core_times: dict[str, list[float]] = {b: [] for b in backends}
        outputs: dict[str, Any] = {}
        dets = CocoMetric.results2json([dict(img_id=s['img_id'], **s['pred']) for s in samples], COCO_CAT_IDS,
                                       {s['img_id']: s['img_id'] for s in samples})
        for _ in range(rounds):  # alternate, so that a change of load hits both alike
            for b in backends:
                seconds, results, table = run_coco_metric(b, ann_file, samples)
                metric_times[b].append(seconds)
                outputs[b] = (results, table)
                core_times[b].append(run_cocoeval(b, ann_file, dets))
    (ref, ref_table), (fast, fast_table) = outputs['pycocotools'], outputs['faster_coco_eval']
    diff = max(abs(ref[f'coco/{n}'] - fast[f'coco/{n}']) for n in STAT_NAMES)
    assert diff < 1e-12 and ref_table == fast_table, (ref, fast)
    print('| measurement                                   | pycocotools (s) | faster-coco-eval (s) | speed-up |')
    print('|-----------------------------------------------|-----------------|----------------------|----------|')
    for name, times in (('CocoMetric.evaluate (what a validation waits)', metric_times),
                        ('COCOeval evaluate() + accumulate() only', core_times)):
        slow, fast_s = statistics.median(times['pycocotools']), statistics.median(times['faster_coco_eval'])
        print(f'| {name:<45} | {slow:15.2f} | {fast_s:20.2f} | {slow / fast_s:7.1f}x |')
    print('the 12 numbers (pycocotools / faster-coco-eval, largest difference '
          f'{diff:.1e}); per-class table identical: {ref_table == fast_table}')
    for n in STAT_NAMES:
        print(f'  {n:<12} {ref[f"coco/{n}"]:.6f} / {fast[f"coco/{n}"]:.6f}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--parts', nargs='+', choices=['map', 'coco'], default=['map', 'coco'])
    parser.add_argument('--images', type=int, default=5000)
    parser.add_argument('--classes', type=int, default=20)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--coco-images', type=int, default=5000)
    parser.add_argument('--coco-rounds', type=int, default=3)
    args = parser.parse_args()
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')),
               platform.processor())
    print(f'machine: {os.cpu_count()} CPUs ({cpu}); numpy {np.__version__}; load average '
          f'{" ".join(f"{x:.1f}" for x in os.getloadavg())} at the start')
    if 'map' in args.parts:
        bench_map(args.images, args.classes, args.rounds)
    if 'coco' in args.parts:
        bench_coco(args.coco_images, args.coco_rounds)
        print(f'load average {" ".join(f"{x:.1f}" for x in os.getloadavg())} at the end')


def bench_map(images: int, classes: int, rounds: int) -> None:
    det_results, annotations = make_data(images, classes)
    n_dets = sum(len(d) for img in det_results for d in img)
    n_gts = sum(len(a['bboxes']) + len(a['bboxes_ignore']) for a in annotations)
    print(f'data: {images} images x {classes} classes, {n_dets} detections, {n_gts} ground-truth boxes; '
          f'median of {rounds} rounds')
    print('| mode     | detkit eval_map (s) | per-image loop (s) | speed-up | mAP (detkit / reference) |')
    print('|----------|---------------------|--------------------|----------|--------------------------|')
    for mode in ('area', '11points'):
        t_fast, m_fast = timed(lambda: eval_map(det_results, annotations, mode=mode, logger='silent')[0],
                               rounds)
        t_ref, m_ref = timed(lambda: reference_eval_map(det_results, annotations, mode=mode), rounds)
        assert abs(m_fast - m_ref) < 1e-9, (m_fast, m_ref)
        print(f'| {mode:<8} | {t_fast:19.3f} | {t_ref:18.3f} | {t_ref / t_fast:7.1f}x | {m_fast:.6f} / {m_ref:.6f} |')


if __name__ == '__main__':
    main()
