"""Batching: ``collate`` for the data loader and ``worker_init_fn`` for its workers."""
from __future__ import annotations

import random
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

__all__ = ['DetBatch', 'collate', 'worker_init_fn']


class DetBatch(NamedTuple):
    """A collated batch; unpacks as ``images, targets, metas`` and also answers ``batch['images']``.

    Attributes:
        images: ``Tensor[N, 3, H, W]`` float32, each input zero-padded at the bottom/right to the largest
            ``H``, ``W`` of the batch.
        targets: one dict per image: ``boxes`` ``Tensor[M, 4]`` float32, ``labels`` ``Tensor[M]`` int64,
            ``ignore_boxes`` ``Tensor[K, 4]`` float32, all in **input-image** pixels.
        metas: one dict per image (the sample's ``meta`` plus ``batch_input_shape=(H, W)``).
    """

    images: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    metas: list[dict[str, Any]]

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return getattr(self, key)
        return tuple.__getitem__(self, key)


def collate(batch: Sequence[dict[str, Any]]) -> DetBatch:
    """Collate PackDetInputs samples (see docs/conventions.md) into a :class:`DetBatch`.

    Args:
        batch: data samples as returned by a dataset's ``__getitem__``.

    Returns:
        ``DetBatch(images, targets, metas)``.
    """
    if len(batch) == 0:
        raise ValueError('collate: empty batch')
    shapes = [tuple(s['inputs'].shape) for s in batch]
    if any(len(s) != 3 for s in shapes):
        raise ValueError(f'collate: inputs must be Tensor[C, H, W], got shapes {shapes}')
    c = shapes[0][0]
    h = max(s[1] for s in shapes)
    w = max(s[2] for s in shapes)
    images = batch[0]['inputs'].new_zeros((len(batch), c, h, w))
    targets, metas = [], []
    for i, sample in enumerate(batch):
        _, sh, sw = sample['inputs'].shape
        images[i, :, :sh, :sw] = sample['inputs']
        # samples of a pipeline without LoadAnnotations (inference) carry no ground truth: empty targets
        boxes = sample.get('gt_bboxes')
        targets.append(dict(
            boxes=boxes if boxes is not None else images.new_zeros((0, 4)),
            labels=sample['gt_labels'] if 'gt_labels' in sample else torch.zeros(0, dtype=torch.long),
            ignore_boxes=sample['gt_bboxes_ignore'] if 'gt_bboxes_ignore' in sample else images.new_zeros((0, 4))))
        metas.append(dict(sample['meta'], batch_input_shape=(h, w)))
    return DetBatch(images, targets, metas)


def worker_init_fn(worker_id: int) -> None:
    """Seed numpy and ``random`` in a data-loader worker from torch's per-worker seed.

    Transforms draw from ``numpy.random``; torch reseeds only itself per worker, so without this every forked
    worker would repeat the same augmentations. It leaves OpenCV's threads alone: ``cv2.setNumThreads`` in a forked
    worker whose parent had run OpenCV's thread pool deadlocks; the parent sets them before forking
    (``detkit.engine.setup_env``, ``env_cfg.opencv_num_threads``).
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
