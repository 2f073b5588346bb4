"""Evaluation: run the detector over a loader and feed the metrics (the metric protocol of docs/conventions.md).

The metrics are held by mmengine's ``Evaluator``, which gives each of them the samples of every batch, merges
their results and refuses two metrics that report the same key. For each image the metrics receive, through
``metric.process(None, samples)``::

    {'img_id', 'ori_shape', 'pred': {'boxes' (K, 4) float32, 'scores' (K,) float32, 'labels' (K,) int64},
     'gt': dataset.get_ann_info(idx)}

with numpy arrays in original-image pixels; ``metric.evaluate(len(dataset))`` then returns a flat dict of
numbers. With several ranks each rank processes its shard and mmengine's ``BaseMetric.evaluate`` gathers them.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from mmengine.evaluator import BaseMetric, Evaluator
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from detkit.registry import METRICS

from .data import batch_to_device
from .dist import is_distributed, is_main_process

__all__ = ['evaluate', 'build_evaluator', 'as_evaluator', 'EvalResult', 'pred_to_numpy', 'select_main_metric']

#: main keys, most preferred first, that ``save_best='auto'`` looks for
MAIN_METRIC_KEYS = ('coco/bbox_mAP', 'voc/mAP')


@dataclass
class EvalResult:
    """What :func:`evaluate` returns.

    Attributes:
        metrics: merged results of all metrics (identical on every rank).
        predictions: with ``keep_predictions``, this rank's ``(dataset_index, meta, pred)`` in loader order,
            ``pred`` holding numpy ``boxes`` / ``scores`` / ``labels`` in original-image pixels.
    """
    metrics: dict[str, Any] = field(default_factory=dict)
    predictions: list[tuple[int, dict[str, Any], dict[str, np.ndarray]]] | None = None


def build_evaluator(evaluator_cfg: Any) -> Evaluator:
    """An mmengine ``Evaluator`` over ``val_evaluator`` / ``test_evaluator``: a metric dict, a list of them,
    ``dict(type='Evaluator', metrics=[...])`` (mmengine's form), or ``None`` (no metrics)."""
    if isinstance(evaluator_cfg, Mapping) and evaluator_cfg.get('type') == 'Evaluator':
        evaluator_cfg = evaluator_cfg.get('metrics')
    if evaluator_cfg is None:
        evaluator_cfg = []
    elif isinstance(evaluator_cfg, Mapping):
        evaluator_cfg = [evaluator_cfg]
    # built here: mmengine's Evaluator would look the types up in mmengine's registry, not detkit's
    return Evaluator([METRICS.build(c) for c in evaluator_cfg])


def as_evaluator(metrics: Evaluator | BaseMetric | Sequence[BaseMetric] | None) -> Evaluator:
    """``metrics`` as an ``Evaluator`` (a built evaluator, one metric, a list of metrics, or ``None``)."""
    if isinstance(metrics, Evaluator):
        return metrics
    if metrics is None:
        return Evaluator([])
    return Evaluator(metrics if isinstance(metrics, Sequence) else [metrics])


def pred_to_numpy(pred: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A detector's per-image prediction as numpy ``boxes`` (K, 4) float32, ``scores`` (K,), ``labels`` (K,)."""
    def arr(key: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        v = pred.get(key)
        if v is None:
            return np.zeros(shape, dtype=dtype)
        v = v.detach().float().cpu().numpy() if dtype == np.float32 else v.detach().cpu().numpy()
        return v.astype(dtype, copy=False)
    return dict(boxes=arr('boxes', np.float32, (0, 4)).reshape(-1, 4), scores=arr('scores', np.float32, (0,)),
                labels=arr('labels', np.int64, (0,)))


def _indices_in_order(loader: DataLoader) -> list[int]:
    # the evaluation samplers are deterministic (sequential, or the unshuffled per-rank shard), so the dataset
    # index of every loaded image is known without relying on a 'sample_idx' in the meta
    return list(iter(loader.sampler))


# The loop is ours: mmengine's ValLoop needs a Runner and a model with val_step; detkit's detectors have predict().
@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, evaluator: Evaluator | Sequence[BaseMetric] | None,
             device: torch.device, *, keep_predictions: bool = False, autocast_dtype: torch.dtype | None = None,
             desc: str = 'eval') -> EvalResult:
    """Predict every image of ``loader`` and evaluate the metrics.

    Args:
        model: the detector, unwrapped (its ``predict(images, metas, rescale=True)`` is called).
        loader: an evaluation loader (see :func:`detkit.engine.data.build_dataloader` with ``train=False``).
        evaluator: an mmengine ``Evaluator`` or built metrics (``BaseMetric``); empty or ``None`` to only predict.
        device: where the model is.
        keep_predictions: also return the predictions (for ``--out`` and ``--show-dir``).
        autocast_dtype: run the forward pass under autocast with this dtype (AMP training evaluates the same way).
    """
    evaluator = as_evaluator(evaluator)
    metrics = evaluator.metrics
    dataset = loader.dataset
    evaluator.dataset_meta = getattr(dataset, 'metainfo', None)
    for metric in metrics:
        if is_distributed() and getattr(metric, 'collect_device', None) == 'cpu' and \
                getattr(metric, 'collect_dir', None) is None:
            # mmengine's 'cpu' collection exchanges files through ./.dist_test, which needs a filesystem shared
            # by all nodes; its 'gpu' mode gathers through the process group (works with gloo on CPU too)
            metric.collect_device = 'gpu'
    was_training = model.training
    model.eval()
    indices = _indices_in_order(loader)
    has_ann = hasattr(dataset, 'get_ann_info')
    if metrics and not has_ann:
        raise AttributeError(f'{type(dataset).__name__} has no get_ann_info(idx); the metrics need it')
    predictions: list[tuple[int, dict[str, Any], dict[str, np.ndarray]]] = []
    pos = 0
    bar = tqdm(total=len(loader), desc=desc, dynamic_ncols=True, leave=False,
               disable=not is_main_process() or not sys.stderr.isatty())
    try:
        for batch in loader:
            images, targets, metas = batch
            images, _ = batch_to_device(images, [], device)
            if autocast_dtype is not None:
                with torch.autocast(device_type=device.type, dtype=autocast_dtype):
                    preds = model.predict(images, metas, rescale=True)
            else:
                preds = model.predict(images, metas, rescale=True)
            samples = []
            for meta, pred in zip(metas, preds):
                idx = indices[pos]
                pos += 1
                pred_np = pred_to_numpy(pred)
                if metrics:
                    samples.append({'img_id': meta.get('img_id', idx), 'ori_shape': meta.get('ori_shape'),
                                    'pred': pred_np, 'gt': dataset.get_ann_info(idx)})
                if keep_predictions:
                    predictions.append((idx, meta, pred_np))
            if metrics:
                evaluator.process(samples)
            bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    results = evaluator.evaluate(len(dataset)) if metrics else {}
    return EvalResult(metrics=results, predictions=predictions if keep_predictions else None)


def select_main_metric(metrics: Mapping[str, Any], save_best: str = 'auto') -> str | None:
    """The key that decides the best checkpoint.

    ``'auto'``: ``coco/bbox_mAP`` or ``voc/mAP`` when present, else the first key ending in ``mAP``, else the first
    key. Any other string must be one of the keys.
    """
    if not metrics:
        return None
    if save_best != 'auto':
        if save_best not in metrics:
            raise KeyError(f'default_hooks.checkpoint.save_best={save_best!r} is not among the evaluation '
                           f'results {sorted(metrics)}')
        return save_best
    for key in MAIN_METRIC_KEYS:
        if key in metrics:
            return key
    for key in metrics:
        if key.endswith('mAP'):
            return key
    return next(iter(metrics))
