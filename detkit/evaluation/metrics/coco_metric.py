"""``CocoMetric``: COCO box AP with pycocotools' COCOeval, from a COCO file or from any dataset's ground truth."""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from typing import Any, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from terminaltables import AsciiTable

from detkit.registry import METRICS

from .voc_metric import to_numpy

__all__ = ['CocoMetric', 'xyxy2xywh', 'gt_to_coco']

#: COCOeval.stats in summary order, as returned (with the 'coco/' prefix)
STAT_NAMES = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l', 'bbox_AR_1',
              'bbox_AR_10', 'bbox_AR_100', 'bbox_AR_s', 'bbox_AR_m', 'bbox_AR_l')


def xyxy2xywh(boxes: np.ndarray) -> np.ndarray:
    """``(n, 4)`` ``x1, y1, x2, y2`` → COCO ``x, y, w, h`` (no +1), float64 for JSON."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])


def gt_to_coco(gts: Sequence[dict[str, np.ndarray]], shapes: Sequence[tuple[int, int]], classes: Sequence[str],
               cat_ids: Sequence[int]) -> COCO:
    """An in-memory COCO ground-truth object from ``get_ann_info``-style annotations.

    Image ``i`` gets id ``i + 1``; ignored boxes (VOC difficult, crowd) become ``iscrowd=1`` annotations, which
    COCOeval ignores the same way; ``area`` is the box area.

    Args:
        gts: per image ``dict(bboxes, labels, bboxes_ignore, labels_ignore)`` in original-image pixels.
        shapes: per image ``(h, w)`` of the original image.
        classes: class names; ``cat_ids[label]`` is the category id of label ``label``.
        cat_ids: category ids, one per class.
    """
    images, anns = [], []
    for i, (gt, (h, w)) in enumerate(zip(gts, shapes)):
        images.append(dict(id=i + 1, width=int(w), height=int(h), file_name=f'{i + 1}'))
        for key_b, key_l, crowd in (('bboxes', 'labels', 0), ('bboxes_ignore', 'labels_ignore', 1)):
            boxes = xyxy2xywh(to_numpy(gt.get(key_b, np.zeros((0, 4)))))
            labels = to_numpy(gt.get(key_l, np.zeros(0))).astype(np.int64).reshape(-1)
            for (x, y, bw, bh), label in zip(boxes.tolist(), labels.tolist()):
                anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=int(cat_ids[label]),
                                 bbox=[x, y, bw, bh], area=bw * bh, iscrowd=crowd))
    coco = COCO()
    coco.dataset = dict(images=images, annotations=anns,
                        categories=[dict(id=int(c), name=n) for c, n in zip(cat_ids, classes)])
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


@METRICS.register_module()
class CocoMetric(BaseMetric):
    """COCO box AP (pycocotools ``COCOeval``, ``iouType='bbox'``) with the 12-line summary and a per-class table.

    Works on COCO data from ``ann_file`` (predictions are matched to the file's images by ``img_id`` and to its
    categories by class NAME, so a ``classes`` subset works), and without ``ann_file`` on any dataset: the
    ground truth the evaluation loop passes (``sample['gt']``, original-image pixels) is turned into an
    in-memory COCO object (ignored boxes become crowd regions), so VOC or TXT data get COCO numbers too.

    Results are written (and read back by COCOeval) as a standard COCO results JSON: ``image_id``, the
    ORIGINAL ``category_id``, ``bbox`` as ``[x, y, w, h]`` and ``score``.

    Args:
        ann_file: COCO ground-truth JSON; ``None`` to evaluate against the samples' ``gt``.
        metric: only ``'bbox'``.
        classwise: print the per-class AP table.
        max_dets: COCOeval ``maxDets`` (pycocotools' default ``(1, 10, 100)``; AP uses the last). mmdetection
            uses ``(100, 300, 1000)``, which equals the default for detectors that keep <= 100 boxes per image.
        iou_thrs: COCOeval IoU thresholds; ``None`` = 0.50:0.05:0.95 (must include 0.5 and 0.75).
        format_only: only write the results JSON (e.g. for the test-dev server) and return ``{}``.
        outfile_prefix: write ``<prefix>.bbox.json``; ``None`` uses a temporary file.
        collect_device: ``'cpu'`` or ``'gpu'``, for distributed result collection.
        prefix: metric-name prefix, ``'coco'`` by default.

    ``evaluate`` returns ``{'coco/bbox_mAP': ..., 'coco/bbox_mAP_50': ..., 'coco/bbox_mAP_75': ...,
    'coco/bbox_mAP_s' / _m / _l, 'coco/bbox_AR_1' / _10 / _100 / _s / _m / _l}`` (COCOeval.stats; -1 where
    COCOeval has nothing to average).
    """

    default_prefix = 'coco'

    def __init__(self, ann_file: str | None = None, metric: str | Sequence[str] = 'bbox', classwise: bool = True,
                 max_dets: Sequence[int] = (1, 10, 100), iou_thrs: Sequence[float] | None = None,
                 format_only: bool = False, outfile_prefix: str | None = None, collect_device: str = 'cpu',
                 prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        metrics = [metric] if isinstance(metric, str) else list(metric)
        if metrics != ['bbox']:
            raise ValueError(f"CocoMetric: only metric='bbox' is supported, got {metric!r}")
        if ann_file is not None and not os.path.isfile(ann_file):
            raise FileNotFoundError(f'CocoMetric: ann_file not found: {ann_file}')
        if format_only and outfile_prefix is None:
            raise ValueError('CocoMetric: format_only=True needs outfile_prefix (where to write the results)')
        self.ann_file = ann_file
        self.classwise = classwise
        self.max_dets = tuple(int(m) for m in max_dets)
        if len(self.max_dets) != 3:
            raise ValueError(f'CocoMetric: max_dets needs 3 values (COCOeval summary), got {max_dets}')
        self.iou_thrs = None if iou_thrs is None else np.asarray(iou_thrs, np.float64)
        self.format_only = format_only
        self.outfile_prefix = outfile_prefix
        self._coco_gt: COCO | None = None

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Store the predictions (and, without ``ann_file``, the ground truth) of each image."""
        for sample in data_samples:
            pred = sample['pred']
            entry = dict(img_id=sample['img_id'], ori_shape=tuple(int(v) for v in sample['ori_shape'][:2]),
                         boxes=to_numpy(pred['boxes']).astype(np.float32).reshape(-1, 4),
                         scores=to_numpy(pred['scores']).astype(np.float32).reshape(-1),
                         labels=to_numpy(pred['labels']).astype(np.int64).reshape(-1))
            if self.ann_file is None:
                gt = sample.get('gt')
                if gt is None:
                    raise KeyError('CocoMetric without ann_file needs sample["gt"] (dataset.get_ann_info(idx))')
                entry['gt'] = {k: to_numpy(v) for k, v in gt.items()}
            self.results.append(entry)

    # ------------------------------------------------------------------ ground truth and results
    def _ground_truth(self, results: list, classes: Sequence[str]) -> tuple[COCO, list[int], dict]:
        """``(coco_gt, cat_ids per label, img_id -> coco image id)``."""
        if self.ann_file is not None:
            if self._coco_gt is None:
                from detkit.datasets.coco import load_coco_json
                self._coco_gt = load_coco_json(self.ann_file)
            coco = self._coco_gt
            by_name = {c['name']: c['id'] for c in coco.dataset['categories']}
            missing = [c for c in classes if c not in by_name]
            if missing:
                raise ValueError(f'CocoMetric: classes {missing} are not categories of {self.ann_file}')
            known = set(coco.getImgIds())
            unknown = [r['img_id'] for r in results if r['img_id'] not in known]
            if unknown:
                raise ValueError(f'CocoMetric: image ids {unknown[:5]} are not in {self.ann_file}')
            return coco, [by_name[c] for c in classes], {r['img_id']: r['img_id'] for r in results}
        cat_ids = list((self.dataset_meta or {}).get('cat_ids') or range(1, len(classes) + 1))
        img_map = {r['img_id']: i + 1 for i, r in enumerate(results)}
        coco = gt_to_coco([r['gt'] for r in results], [r['ori_shape'] for r in results], classes, cat_ids)
        return coco, cat_ids, img_map

    @staticmethod
    def results2json(results: list, cat_ids: Sequence[int], img_map: dict) -> list[dict]:
        """COCO results entries (``image_id``, original ``category_id``, ``bbox`` xywh, ``score``)."""
        out = []
        for r in results:
            xywh = xyxy2xywh(r['boxes']).tolist()
            for box, score, label in zip(xywh, r['scores'].tolist(), r['labels'].tolist()):
                out.append(dict(image_id=img_map[r['img_id']], category_id=int(cat_ids[label]), bbox=box,
                                score=float(score)))
        return out

    # ------------------------------------------------------------------ evaluation
    def compute_metrics(self, results: list) -> dict[str, float]:
        """Run COCOeval; print the 12-line summary and the per-class table."""
        classes = (self.dataset_meta or {}).get('classes')
        if not classes:
            raise ValueError('CocoMetric: dataset_meta["classes"] is not set; the evaluation loop sets '
                             'metric.dataset_meta = dataset.metainfo')
        # one entry per image (a padded sampler can repeat images)
        seen, unique = set(), []
        for r in results:
            if r['img_id'] not in seen:
                seen.add(r['img_id'])
                unique.append(r)
        coco_gt, cat_ids, img_map = self._ground_truth(unique, classes)
        dets = self.results2json(unique, cat_ids, img_map)

        with contextlib.ExitStack() as stack:
            if self.outfile_prefix is not None:
                os.makedirs(os.path.dirname(os.path.abspath(self.outfile_prefix)), exist_ok=True)
                json_path = f'{self.outfile_prefix}.bbox.json'
            else:
                json_path = os.path.join(stack.enter_context(tempfile.TemporaryDirectory()), 'results.bbox.json')
            with open(json_path, 'w') as f:
                json.dump(dets, f)
            if self.format_only:
                print(f'CocoMetric: results written to {json_path}')
                return {}
            if not dets:
                print('CocoMetric: no detections on the whole dataset; every AP is 0')
                return {name: 0.0 for name in STAT_NAMES}
            coco_dt = coco_gt.loadRes(json_path)

        coco_eval = COCOeval(coco_gt, coco_dt, 'bbox')
        coco_eval.params.catIds = list(cat_ids)
        coco_eval.params.imgIds = sorted(img_map.values())
        coco_eval.params.maxDets = list(self.max_dets)
        if self.iou_thrs is not None:
            coco_eval.params.iouThrs = self.iou_thrs
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        if self.classwise:
            print(self._classwise_table(coco_eval, classes, cat_ids))
        return {name: float(v) for name, v in zip(STAT_NAMES, coco_eval.stats)}

    @staticmethod
    def _classwise_table(coco_eval: COCOeval, classes: Sequence[str], cat_ids: Sequence[int]) -> str:
        """Per-class AP, AP50, AP75 (area all, last maxDets) from COCOeval's precision array."""
        precision = coco_eval.eval['precision']  # (T iou thrs, R recall thrs, K cats, A areas, M maxDets)
        eval_cat_ids = list(coco_eval.params.catIds)  # COCOeval sorted them
        thrs = np.asarray(coco_eval.params.iouThrs)

        def ap(p: np.ndarray) -> str:
            p = p[p > -1]
            return f'{float(np.mean(p)):.3f}' if p.size else 'nan'

        rows = [['class', 'AP', 'AP50', 'AP75']]
        for name, cat_id in zip(classes, cat_ids):
            k = eval_cat_ids.index(cat_id)
            row = [name, ap(precision[:, :, k, 0, -1])]
            for t in (0.5, 0.75):
                hit = np.flatnonzero(np.isclose(thrs, t))
                row.append(ap(precision[hit[0], :, k, 0, -1]) if hit.size else '-')
            rows.append(row)
        return '\n' + AsciiTable(rows).table
