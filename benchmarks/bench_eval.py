#!/usr/bin/env python
"""eval_map on 5,000 images x 20 classes: detkit's vectorised version vs a plain per-image loop reference.

Synthetic VOC-like data: 1-6 ground-truth boxes per image (10% difficult), about 100 detections per image
(jittered true hits, duplicates and random false positives, spread over the classes), as an SSD outputs after
NMS with a low score threshold. Both implementations get the same arrays and must return the same mAP.

    python benchmarks/bench_eval.py [--images 5000] [--classes 20] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detkit.evaluation import average_precision, eval_map  # noqa: E402
from detkit.structures.bbox_np import bbox_overlaps_np  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=int, default=5000)
    parser.add_argument('--classes', type=int, default=20)
    parser.add_argument('--rounds', type=int, default=3)
    args = parser.parse_args()
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')),
               platform.processor())
    print(f'machine: {os.cpu_count()} CPUs ({cpu}); numpy {np.__version__}')
    det_results, annotations = make_data(args.images, args.classes)
    n_dets = sum(len(d) for img in det_results for d in img)
    n_gts = sum(len(a['bboxes']) + len(a['bboxes_ignore']) for a in annotations)
    print(f'data: {args.images} images x {args.classes} classes, {n_dets} detections, {n_gts} ground-truth boxes; '
          f'median of {args.rounds} rounds')
    print('| mode     | detkit eval_map (s) | per-image loop (s) | speed-up | mAP (detkit / reference) |')
    print('|----------|---------------------|--------------------|----------|--------------------------|')
    for mode in ('area', '11points'):
        t_fast, m_fast = timed(lambda: eval_map(det_results, annotations, mode=mode, logger='silent')[0],
                               args.rounds)
        t_ref, m_ref = timed(lambda: reference_eval_map(det_results, annotations, mode=mode), args.rounds)
        assert abs(m_fast - m_ref) < 1e-9, (m_fast, m_ref)
        print(f'| {mode:<8} | {t_fast:19.3f} | {t_ref:18.3f} | {t_ref / t_fast:7.1f}x | {m_fast:.6f} / {m_ref:.6f} |')


if __name__ == '__main__':
    main()
