"""Data loaders from config: samplers seeded per epoch, with detkit.datasets' collate and worker seeding.

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

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler

from detkit.datasets import build_dataset, collate, worker_init_fn

__all__ = ['build_dataloader', 'batch_to_device', 'find_dataset_attr']


def batch_to_device(images: torch.Tensor, targets: list[dict[str, torch.Tensor]],
                    device: torch.device) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    non_blocking = device.type == 'cuda'
    images = images.to(device, non_blocking=non_blocking)
    targets = [{k: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v)
                for k, v in t.items()} for t in targets]
    return images, targets


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
                      collate_fn=collate, worker_init_fn=worker_init_fn,
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
