"""``VOCMetric``: Pascal-VOC mAP for the evaluation loop."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric

from detkit.registry import METRICS

from ..functional import eval_map

__all__ = ['VOCMetric', 'to_numpy']


def to_numpy(x: Any) -> np.ndarray:
    """Tensor / list / array → numpy array (tensors are detached and moved to the CPU)."""
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def split_by_class(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Per-class ``(n_c, 5)`` arrays ``[x1, y1, x2, y2, score]`` from flat predictions."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    dets = np.hstack([boxes, np.asarray(scores, np.float32).reshape(-1, 1)])
    labels = np.asarray(labels, np.int64).reshape(-1)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f'predicted labels must be in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}')
    return [dets[labels == c] for c in range(num_classes)]


@METRICS.register_module()
class VOCMetric(BaseMetric):
    """Pascal-VOC mean AP (``eval_map``) with a per-class table.

    The evaluation loop sets ``dataset_meta`` (for ``classes``) and calls ``process(None, samples)`` with one
    dict per image: ``{'img_id', 'ori_shape', 'pred': {'boxes', 'scores', 'labels'}, 'gt':
    dataset.get_ann_info(idx)}``, predictions and ground truth in **original-image** pixels. Ignored ground
    truth (VOC ``difficult``, COCO crowd) neither helps nor hurts.

    Args:
        iou_thr: IoU threshold, or several (then ``mAP`` is their mean and each gets an ``AP<thr*100>`` key).
        eval_mode: ``'11points'`` (VOC2007 test) or ``'area'`` (VOC2010+).
        use_legacy_coordinate: +1 on box widths (see :func:`~detkit.evaluation.eval_map`; off for detkit's
            VOC loader, which already gives devkit-equal IoUs).
        collect_device: ``'cpu'`` or ``'gpu'``, for distributed result collection.
        prefix: metric-name prefix; ``'voc'`` by default.

    ``evaluate`` returns ``{'voc/mAP': ..., 'voc/AP50': ...}`` (values in ``[0, 1]``).
    """

    default_prefix = 'voc'

    def __init__(self, iou_thr: float | Sequence[float] = 0.5, eval_mode: str = '11points',
                 use_legacy_coordinate: bool = False, collect_device: str = 'cpu', prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if eval_mode not in ('11points', 'area'):
            raise ValueError(f"VOCMetric: eval_mode must be '11points' or 'area', got {eval_mode!r}")
        self.iou_thrs = [float(iou_thr)] if isinstance(iou_thr, (int, float)) else [float(t) for t in iou_thr]
        self.eval_mode = eval_mode
        self.use_legacy_coordinate = use_legacy_coordinate

    def _num_classes(self) -> tuple[int, tuple[str, ...] | None]:
        classes = (self.dataset_meta or {}).get('classes')
        if not classes:
            raise ValueError('VOCMetric: dataset_meta["classes"] is not set; the evaluation loop sets '
                             'metric.dataset_meta = dataset.metainfo')
        return len(classes), tuple(classes)

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Store per-class detections and the ground truth of each image."""
        num_classes, _ = self._num_classes()
        for sample in data_samples:
            pred, gt = sample['pred'], sample['gt']
            dets = split_by_class(to_numpy(pred['boxes']), to_numpy(pred['scores']), to_numpy(pred['labels']),
                                  num_classes)
            ann = dict(bboxes=to_numpy(gt['bboxes']).astype(np.float32).reshape(-1, 4),
                       labels=to_numpy(gt['labels']).astype(np.int64).reshape(-1),
                       bboxes_ignore=to_numpy(gt.get('bboxes_ignore', np.zeros((0, 4)))).astype(np.float32)
                       .reshape(-1, 4),
                       labels_ignore=to_numpy(gt.get('labels_ignore', np.zeros(0))).astype(np.int64).reshape(-1))
            self.results.append((ann, dets))

    def compute_metrics(self, results: list) -> dict[str, float]:
        """mAP over the collected images; prints one table per IoU threshold."""
        _, classes = self._num_classes()
        annotations = [r[0] for r in results]
        dets = [r[1] for r in results]
        out: dict[str, float] = {}
        aps = []
        for thr in self.iou_thrs:
            print(f'\n---------- VOC {self.eval_mode} AP at IoU {thr:.2f} ----------')
            mean_ap, _ = eval_map(dets, annotations, iou_thr=thr, mode=self.eval_mode,
                                  use_legacy_coordinate=self.use_legacy_coordinate, classes=classes)
            aps.append(mean_ap)
            out[f'AP{int(round(thr * 100))}'] = float(mean_ap)
        out['mAP'] = float(np.mean(aps))
        return out
