"""Data loaders from config: samplers seeded per epoch, worker seeding, the batch collate function.

Config (``train_dataloader`` / ``val_dataloader`` / ``test_dataloader``)::

    dict(batch_size=8,            # images per process (per GPU)
         num_workers=2, persistent_workers=True, pin_memory=None (= on when training on CUDA),
         shuffle=True, drop_last=False,
         dataset=dict(type='VOCDataset', ...))

Shuffling is reproducible: the order of epoch ``e`` is a permutation drawn from a generator seeded with
``seed + e`` (torch's ``DistributedSampler`` does exactly this, also with one process), so a run resumed at epoch
``e`` sees the same order as the uninterrupted run. The augmentations repeat exactly too with ``num_workers=0``
(they draw from the main process's RNGs, which checkpoints restore) or with non-persistent workers (each epoch's
workers are seeded from the restored torch RNG). Persistent workers keep their RNG streams running from epoch to
epoch, and a resumed run starts new ones: the same images in the same order, but different random augmentations.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler

from detkit.registry import DATASETS

__all__ = ['build_dataset', 'build_dataloader', 'default_collate', 'get_collate_fn', 'unpack_batch',
           'worker_init_fn', 'find_dataset_attr']

Batch = tuple[torch.Tensor, list[dict[str, torch.Tensor]], list[dict[str, Any]]]


def default_collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch packed samples (the data-sample contract in docs/conventions.md).

    Used when ``detkit.datasets.collate`` does not exist; it follows the same contract.

    Returns:
        ``images`` ``Tensor[N, 3, H, W]`` zero-padded at the bottom/right to the largest sample, ``targets`` (list
        of dicts ``boxes`` ``Tensor[M, 4]``, ``labels`` ``Tensor[M]``, ``ignore_boxes`` ``Tensor[K, 4]`` in
        input-image pixels) and ``metas`` (list of dicts).
    """
    if not samples:
        raise ValueError('cannot collate an empty batch')
    h = max(s['inputs'].shape[-2] for s in samples)
    w = max(s['inputs'].shape[-1] for s in samples)
    first = samples[0]['inputs']
    images = first.new_zeros((len(samples), first.shape[0], h, w))
    targets, metas = [], []
    for i, s in enumerate(samples):
        img = s['inputs']
        images[i, :, :img.shape[-2], :img.shape[-1]] = img
        boxes = torch.as_tensor(s.get('gt_bboxes', torch.zeros(0, 4)), dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(s.get('gt_labels', torch.zeros(0)), dtype=torch.int64).reshape(-1)
        ignore = torch.as_tensor(s.get('gt_bboxes_ignore', torch.zeros(0, 4)), dtype=torch.float32).reshape(-1, 4)
        targets.append(dict(boxes=boxes, labels=labels, ignore_boxes=ignore))
        metas.append(dict(s.get('meta', {})))
    return dict(images=images, targets=targets, metas=metas)


def get_collate_fn() -> Callable[[Sequence[Mapping[str, Any]]], Any]:
    """``detkit.datasets.collate`` when the datasets package provides it, else :func:`default_collate`."""
    try:
        from detkit.datasets import collate  # noqa: PLC0415 (lazy: datasets is another part of detkit)
    except ImportError:
        return default_collate
    if not callable(collate):  # a module named collate holding the function
        collate = getattr(collate, 'collate', None)
    return collate if callable(collate) else default_collate


def unpack_batch(batch: Any) -> Batch:
    """``(images, targets, metas)`` from a collated batch given as a dict or as a 3-tuple."""
    if isinstance(batch, Mapping):
        try:
            return batch['images'], batch['targets'], batch['metas']
        except KeyError as e:
            raise KeyError('a collated batch must hold "images", "targets" and "metas"; '
                           f'got keys {sorted(batch)}') from e
    if isinstance(batch, (tuple, list)) and len(batch) == 3:
        return batch[0], batch[1], batch[2]
    raise TypeError(f'cannot read a collated batch of type {type(batch).__name__}: expected a dict with images, '
                    f'targets, metas or a 3-tuple')


def batch_to_device(images: torch.Tensor, targets: list[dict[str, torch.Tensor]],
                    device: torch.device) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    non_blocking = device.type == 'cuda'
    images = images.to(device, non_blocking=non_blocking)
    targets = [{k: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v)
                for k, v in t.items()} for t in targets]
    return images, targets


def worker_init_fn(worker_id: int) -> None:
    """Seed python and numpy in a loader worker, and stop OpenCV from spawning threads there.

    torch seeds each worker with ``base_seed + worker_id`` (``base_seed`` drawn from the main process, so it
    differs per epoch, per rank and per run seed), but python's and numpy's RNGs are copies of the parent's:
    without this, every worker would draw the same "random" augmentations.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    try:
        import cv2  # noqa: PLC0415
        # one image per worker already fills the cores; OpenCV's own thread pool only oversubscribes them
        cv2.setNumThreads(0)
    except ImportError:
        pass


def build_dataset(dataset_cfg: Mapping[str, Any]) -> Dataset:
    """``DATASETS.build(dataset_cfg)``."""
    return DATASETS.build(dataset_cfg)


def build_dataloader(loader_cfg: Mapping[str, Any], *, train: bool, seed: int = 0, rank: int = 0,
                     world_size: int = 1, device_type: str = 'cpu', dataset: Dataset | None = None,
                     name: str = 'dataloader') -> DataLoader:
    """Build a loader for training (shuffled per epoch, sharded over ranks) or evaluation (in order).

    Args:
        loader_cfg: the config's ``*_dataloader`` dict.
        train: training loader (epoch-seeded shuffle) vs evaluation loader (dataset order; with several ranks,
            rank ``r`` gets items ``r, r + world_size, ...``).
        seed: base of the per-epoch shuffle seed (``seed + epoch``).
        dataset: an already built dataset (else built from ``loader_cfg['dataset']``).
        name: the config key, for error messages.
    """
    known = {'batch_size', 'num_workers', 'persistent_workers', 'shuffle', 'drop_last', 'pin_memory', 'dataset',
             'sampler', 'prefetch_factor'}
    unknown = set(loader_cfg) - known
    if unknown:
        raise KeyError(f'{name} has unknown keys {sorted(unknown)}; supported: {sorted(known)}')
    if dataset is None:
        if 'dataset' not in loader_cfg:
            raise KeyError(f'{name} has no "dataset" entry')
        dataset = build_dataset(loader_cfg['dataset'])
    batch_size = int(loader_cfg.get('batch_size', 1))
    num_workers = int(loader_cfg.get('num_workers', 0))
    # mmdetection configs write the shuffle flag in sampler=dict(type='DefaultSampler', shuffle=...)
    shuffle = bool(loader_cfg.get('shuffle', (loader_cfg.get('sampler') or {}).get('shuffle', True)))
    if train:
        # DistributedSampler with one replica is a plain epoch-seeded shuffle; set_epoch(e) seeds it with seed + e
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                     shuffle=shuffle, seed=seed,
                                     drop_last=bool(loader_cfg.get('drop_last', False)))
    elif world_size > 1:
        # pads to a multiple of world_size by repeating the first items; the metrics drop the repeats
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
    else:
        sampler = SequentialSampler(dataset)
    pin_memory = loader_cfg.get('pin_memory')
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs['persistent_workers'] = bool(loader_cfg.get('persistent_workers', False))
        if loader_cfg.get('prefetch_factor') is not None:
            kwargs['prefetch_factor'] = int(loader_cfg['prefetch_factor'])
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=get_collate_fn(), worker_init_fn=worker_init_fn,
                      pin_memory=(device_type == 'cuda') if pin_memory is None else bool(pin_memory),
                      drop_last=bool(loader_cfg.get('drop_last', False)) and train, **kwargs)


def find_dataset_attr(dataset: Any, attr: str, _depth: int = 0) -> list[Any]:
    """Every object in the dataset (looking through RepeatDataset / ConcatDataset wrappers) that has ``attr``.

    A wrapper that has the attribute itself is returned instead of its children.
    """
    if _depth > 8 or dataset is None:
        return []
    if hasattr(dataset, attr):
        return [dataset]
    found = []
    inner = getattr(dataset, 'dataset', None)
    if inner is not None:
        found += find_dataset_attr(inner, attr, _depth + 1)
    for d in getattr(dataset, 'datasets', None) or []:
        found += find_dataset_attr(d, attr, _depth + 1)
    return found
