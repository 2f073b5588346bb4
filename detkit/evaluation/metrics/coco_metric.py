"""``CocoMetric``: COCO box AP from a COCO file or from any dataset's ground truth.

Two interchangeable backends compute the same 12 numbers: pycocotools' ``COCOeval`` (Python loops over images and
categories) and faster-coco-eval's ``COCOeval_faster`` (the same algorithm in C++, faster: BENCHMARKS.md;
``make install`` installs it). ``backend='auto'`` uses faster-coco-eval when it is installed.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from terminaltables import AsciiTable

from detkit.registry import METRICS

from .voc_metric import to_numpy

__all__ = ['CocoMetric', 'xyxy2xywh', 'gt_to_coco', 'resolve_coco_backend', 'summarize', 'COCO_BACKENDS']

#: what ``CocoMetric(backend=...)`` accepts
COCO_BACKENDS = ('auto', 'pycocotools', 'faster_coco_eval')

#: COCOeval.stats in summary order, as returned (with the 'coco/' prefix)
STAT_NAMES = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l', 'bbox_AR_1',
              'bbox_AR_10', 'bbox_AR_100', 'bbox_AR_s', 'bbox_AR_m', 'bbox_AR_l')


def xyxy2xywh(boxes: np.ndarray) -> np.ndarray:
    """``(n, 4)`` ``x1, y1, x2, y2`` → COCO ``x, y, w, h`` (no +1), float64 for JSON."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])


def resolve_coco_backend(backend: str = 'auto') -> str:
    """The COCO evaluation backend that ``backend`` names: ``'pycocotools'`` or ``'faster_coco_eval'``.

    ``'auto'`` is ``'faster_coco_eval'`` when that package imports, else ``'pycocotools'``.

    Raises:
        ValueError: an unknown name.
        ImportError: ``'faster_coco_eval'`` was asked for and is not installed, saying how to install it.
    """
    if backend not in COCO_BACKENDS:
        raise ValueError(f'CocoMetric: backend must be one of {COCO_BACKENDS}, got {backend!r}')
    if backend == 'pycocotools':
        return backend
    try:
        import faster_coco_eval  # noqa: F401, PLC0415 (optional dependency)
    except ImportError as err:
        if backend == 'auto':
            return 'pycocotools'
        raise ImportError(f"CocoMetric(backend='faster_coco_eval'): faster-coco-eval cannot be imported ({err}); "
                          "install it (pip install faster-coco-eval; make install does) or use "
                          "backend='pycocotools'") from None
    return 'faster_coco_eval'


def summarize(coco_eval: Any) -> tuple[list[float], list[str]]:
    """The 12 COCO numbers (:data:`STAT_NAMES` order) of an accumulated COCOeval and their summary lines.

    What ``COCOeval.summarize`` computes, with AP taken at the last ``maxDets`` everywhere: pycocotools'
    ``summarize`` takes the first AP at ``maxDets=100`` whatever ``maxDets`` holds (-1 when 100 is not in it),
    faster-coco-eval's at the last value; done here, both backends give the same numbers for every ``maxDets``.
    Means over the entries that are not -1, as COCOeval; -1 when there are none.
    """
    p = coco_eval.params
    max_dets = list(p.maxDets)
    iou_thrs = np.asarray(p.iouThrs)

    def one(ap: bool, iou_thr: float | None = None, area: str = 'all', dets: int = max_dets[-1]) -> tuple[float, str]:
        s = coco_eval.eval['precision'] if ap else coco_eval.eval['recall']  # (T, R, K, A, M) / (T, K, A, M)
        if iou_thr is not None:
            s = s[np.isclose(iou_thrs, iou_thr)]
        s = s[..., list(p.areaRngLbl).index(area), max_dets.index(dets)]
        valid = s[s > -1]
        value = float(np.mean(valid)) if valid.size else -1.0
        iou = f'{iou_thrs[0]:0.2f}:{iou_thrs[-1]:0.2f}' if iou_thr is None else f'{iou_thr:0.2f}'
        title, kind = ('Average Precision', '(AP)') if ap else ('Average Recall', '(AR)')
        return value, f' {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={dets:>3d} ] = {value:0.3f}'

    rows = [one(True), one(True, 0.5), one(True, 0.75)] + [one(True, area=a) for a in ('small', 'medium', 'large')]
    rows += [one(False, dets=d) for d in max_dets] + [one(False, area=a) for a in ('small', 'medium', 'large')]
    return [v for v, _ in rows], [line for _, line in rows]


def _coco_api(backend: str) -> tuple[type, type]:
    """``(COCO class, COCOeval class)`` of a resolved backend."""
    if backend == 'faster_coco_eval':
        from faster_coco_eval import COCO as FasterCOCO  # noqa: PLC0415 (optional dependency)
        from faster_coco_eval import COCOeval_faster  # noqa: PLC0415
        return FasterCOCO, COCOeval_faster
    return COCO, COCOeval


def _index(coco_cls: type, dataset: dict[str, Any]) -> Any:
    """A ``coco_cls`` object over the COCO ``dataset`` dict, indexed (pycocotools prints while indexing)."""
    coco = coco_cls()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def gt_to_coco(gts: Sequence[dict[str, np.ndarray]], shapes: Sequence[tuple[int, int]], classes: Sequence[str],
               cat_ids: Sequence[int], coco_cls: type = COCO) -> Any:
    """An in-memory COCO ground-truth object from ``get_ann_info``-style annotations.

    Image ``i`` gets id ``i + 1``; ignored boxes (VOC difficult, crowd) become ``iscrowd=1`` annotations, which
    COCOeval ignores the same way; ``area`` is the box area.

    Args:
        gts: per image ``dict(bboxes, labels, bboxes_ignore, labels_ignore)`` in original-image pixels.
        shapes: per image ``(h, w)`` of the original image.
        classes: class names; ``cat_ids[label]`` is the category id of label ``label``.
        cat_ids: category ids, one per class.
        coco_cls: the backend's ``COCO`` class (pycocotools' or faster-coco-eval's).
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
    return _index(coco_cls, dict(images=images, annotations=anns,
                                 categories=[dict(id=int(c), name=n) for c, n in zip(cat_ids, classes)]))


@METRICS.register_module()
class CocoMetric(BaseMetric):
    """COCO box AP (``COCOeval``, ``iouType='bbox'``) with the 12-line summary and a per-class table.

    Works on COCO data from ``ann_file`` (predictions are matched to the file's images by ``img_id`` and to its
    categories by class NAME, so a ``classes`` subset works), and without ``ann_file`` on any dataset: the
    ground truth the evaluation loop passes (``sample['gt']``, original-image pixels) is turned into an
    in-memory COCO object (ignored boxes become crowd regions), so VOC or TXT data get COCO numbers too.

    Results are standard COCO results entries: ``image_id``, the ORIGINAL ``category_id``, ``bbox`` as
    ``[x, y, w, h]`` and ``score`` (written to ``<outfile_prefix>.bbox.json`` when ``outfile_prefix`` is set).

    Args:
        ann_file: COCO ground-truth JSON; ``None`` to evaluate against the samples' ``gt``.
        metric: only ``'bbox'``.
        classwise: print the per-class AP table.
        max_dets: COCOeval ``maxDets``, increasing (pycocotools' default ``(1, 10, 100)``; AP uses the last).
            mmdetection uses ``(100, 300, 1000)``, which equals the default for detectors that keep <= 100 boxes
            per image.
        iou_thrs: COCOeval IoU thresholds; ``None`` = 0.50:0.05:0.95 (must include 0.5 and 0.75).
        format_only: only write the results JSON (e.g. for the test-dev server) and return ``{}``.
        outfile_prefix: write ``<prefix>.bbox.json``; ``None`` writes nothing.
        backend: ``'pycocotools'`` (``COCOeval``), ``'faster_coco_eval'`` (``COCOeval_faster``, C++, same numbers)
            or ``'auto'`` (faster-coco-eval when installed, else pycocotools).
        collect_device: ``'cpu'`` or ``'gpu'``, for distributed result collection.
        prefix: metric-name prefix, ``'coco'`` by default.

    ``evaluate`` returns ``{'coco/bbox_mAP': ..., 'coco/bbox_mAP_50': ..., 'coco/bbox_mAP_75': ...,
    'coco/bbox_mAP_s' / _m / _l, 'coco/bbox_AR_1' / _10 / _100 / _s / _m / _l}`` (COCOeval.stats; -1 where
    COCOeval has nothing to average).

    Raises:
        ImportError: ``backend='faster_coco_eval'`` without faster-coco-eval installed.
    """

    default_prefix = 'coco'

    def __init__(self, ann_file: str | None = None, metric: str | Sequence[str] = 'bbox', classwise: bool = True,
                 max_dets: Sequence[int] = (1, 10, 100), iou_thrs: Sequence[float] | None = None,
                 format_only: bool = False, outfile_prefix: str | None = None, backend: str = 'auto',
                 collect_device: str = 'cpu', prefix: str | None = None) -> None:
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
        # faster-coco-eval sorts maxDets and pycocotools does not: only increasing values mean the same to both
        if len(self.max_dets) != 3 or list(self.max_dets) != sorted(set(self.max_dets)):
            raise ValueError(f'CocoMetric: max_dets needs 3 increasing values (COCOeval summary), got {max_dets}')
        self.iou_thrs = None if iou_thrs is None else np.asarray(iou_thrs, np.float64)
        self.format_only = format_only
        self.outfile_prefix = outfile_prefix
        self.backend = resolve_coco_backend(backend)
        self._coco_gt: Any = None  # the ann_file's ground truth, read once, as the backend's COCO object

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
    def _ground_truth(self, results: list, classes: Sequence[str]) -> tuple[Any, list[int], dict]:
        """``(coco_gt, cat_ids per label, img_id -> coco image id)``; ``coco_gt`` is the backend's COCO object."""
        coco_cls = _coco_api(self.backend)[0]
        if self.ann_file is not None:
            if self._coco_gt is None:
                from detkit.datasets.coco import load_coco_json  # noqa: PLC0415 (datasets import evaluation)
                checked = load_coco_json(self.ann_file)  # the file's checks and error messages
                self._coco_gt = checked if isinstance(checked, coco_cls) else _index(coco_cls, checked.dataset)
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
        coco = gt_to_coco([r['gt'] for r in results], [r['ori_shape'] for r in results], classes, cat_ids,
                          coco_cls=coco_cls)
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
        """Run COCOeval; print the summary and the per-class table."""
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
        if self.outfile_prefix is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self.outfile_prefix)), exist_ok=True)
            json_path = f'{self.outfile_prefix}.bbox.json'
            with open(json_path, 'w') as f:
                json.dump(dets, f)
            if self.format_only:
                print(f'CocoMetric: results written to {json_path}')
                return {}
        if not dets:
            print('CocoMetric: no detections on the whole dataset; every AP is 0')
            return {name: 0.0 for name in STAT_NAMES}
        # the entries themselves, not the file: JSON keeps every float exactly, so the numbers are the same
        coco_dt = coco_gt.loadRes(dets)

        coco_eval = self._cocoeval(coco_gt, coco_dt)
        coco_eval.params.catIds = list(cat_ids)
        coco_eval.params.imgIds = sorted(img_map.values())
        coco_eval.params.maxDets = list(self.max_dets)
        if self.iou_thrs is not None:
            coco_eval.params.iouThrs = self.iou_thrs
        print(f'CocoMetric: {self.backend}')
        coco_eval.evaluate()
        coco_eval.accumulate()
        stats, lines = summarize(coco_eval)
        print('\n'.join(lines))
        if self.classwise:
            print(self._classwise_table(coco_eval, classes, cat_ids))
        return {name: float(v) for name, v in zip(STAT_NAMES, stats)}

    def _cocoeval(self, coco_gt: Any, coco_dt: Any) -> Any:
        """The backend's COCOeval object for boxes (printing its progress lines)."""
        cocoeval_cls = _coco_api(self.backend)[1]
        if self.backend == 'faster_coco_eval':
            return cocoeval_cls(coco_gt, coco_dt, 'bbox', print_function=print)
        return cocoeval_cls(coco_gt, coco_dt, 'bbox')

    @staticmethod
    def _classwise_table(coco_eval: Any, classes: Sequence[str], cat_ids: Sequence[int]) -> str:
        """Per-class AP, AP50, AP75 (area all, last maxDets) from COCOeval's precision array."""
        precision = coco_eval.eval['precision']  # (T iou thrs, R recall thrs, K cats, A areas, M maxDets)
        eval_cat_ids = [int(c) for c in coco_eval.params.catIds]  # COCOeval sorted them
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
