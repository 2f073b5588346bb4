"""Data loaders from config: samplers seeded per epoch, with detkit.datasets' collate and worker seeding.

Config (``train_dataloader`` / ``val_dataloader`` / ``test_dataloader``)::

    dict(batch_size=8,            # images per process (per GPU)
         num_workers=2, persistent_workers=True, pin_memory=None (= on when training on CUDA),
         shuffle=True, drop_last=False,
         dataset=dict(type='VOCDataset', ...))

Training data is a pure function of ``(seed, epoch)``:

* the order of epoch ``e`` is a permutation drawn from a generator seeded with ``seed + e`` (torch's
  ``DistributedSampler`` does exactly this, also with one process);
* the random augmentations of item ``i`` in epoch ``e`` draw from numpy's and Python's global generators seeded
  from ``(seed, e, i)`` just for that item (the sampler hands the dataset ``(e, i)`` keys; see
  :class:`EpochSeededDataset`), whichever process loads it.

So a run resumed at epoch ``e`` sees the same batches, augmentations included, as the uninterrupted run, and the
batches do not depend on ``num_workers`` or ``persistent_workers`` (persistent workers would otherwise carry
their RNG streams from epoch to epoch, and a resumed run would start new ones).
"""
from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, SequentialSampler

from detkit.datasets import build_dataset, collate, find_dataset_attr, worker_init_fn

__all__ = ['build_dataloader', 'batch_to_device', 'EpochSeededDataset', 'EpochKeySampler',
           'LOADER_KEYS']

#: the keys of a ``*_dataloader`` config
LOADER_KEYS = frozenset({'batch_size', 'num_workers', 'persistent_workers', 'shuffle', 'drop_last', 'pin_memory',
                         'dataset', 'sampler', 'prefetch_factor'})


class EpochSeededDataset(Dataset):
    """A training view of ``dataset`` whose item ``(epoch, idx)`` is ``dataset[idx]`` drawn with seeded RNGs.

    numpy's and Python's global generators (the ones transforms draw from, as in mmdetection) are seeded from
    ``(seed, epoch, idx)`` for the call and restored afterwards, so an item's augmentation depends on nothing else:
    not on the worker that loads it, nor on what that worker loaded before. Other attributes (``metainfo``,
    ``summary``, ...) are the wrapped dataset's.
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == 'dataset':  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        try:
            epoch, idx = key
        except (TypeError, ValueError):
            raise TypeError(f'EpochSeededDataset items are (epoch, index) keys (EpochKeySampler yields them), '
                            f'got {key!r}') from None
        np_seed, py_seed = np.random.SeedSequence([self.seed, int(epoch), int(idx)]).generate_state(2).tolist()
        np_state, py_state = np.random.get_state(), random.getstate()
        np.random.seed(np_seed)
        random.seed(py_seed)
        try:
            return self.dataset[idx]
        finally:  # in the main process (num_workers=0) the caller's streams go on untouched
            np.random.set_state(np_state)
            random.setstate(py_state)


class EpochKeySampler(Sampler):
    """Yields ``(epoch, index)`` for each index of ``sampler`` (a ``DistributedSampler``), for
    :class:`EpochSeededDataset`; ``set_epoch`` goes to the wrapped sampler."""

    def __init__(self, sampler: DistributedSampler) -> None:
        self.sampler = sampler

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.sampler.epoch
        return ((epoch, int(i)) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


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

    Raises:
        KeyError: naming an unknown key of ``loader_cfg``.
        ValueError: an evaluation dataset without images, naming its annotation file(s).
    """
    unknown = set(loader_cfg) - LOADER_KEYS
    if unknown:
        raise KeyError(f'{name} has unknown keys {sorted(unknown)}; supported: {sorted(LOADER_KEYS)}')
    if dataset is None:
        if 'dataset' not in loader_cfg:
            raise KeyError(f'{name} has no "dataset" entry')
        dataset = build_dataset(loader_cfg['dataset'])
    if not train and len(dataset) == 0:
        # evaluating nothing scores 0 and looks like a bad model; the usual cause is a wrong path or split
        parts = [f'{type(d).__name__} ({d.ann_file})' for d in find_dataset_attr(dataset, 'ann_file')]
        raise ValueError(f'{name}: the evaluation dataset has no images: '
                         f'{", ".join(parts) or type(dataset).__name__}; check ann_file, data_root and the split')
    batch_size = int(loader_cfg.get('batch_size', 1))
    num_workers = int(loader_cfg.get('num_workers', 0))
    # mmdetection configs write the shuffle flag in sampler=dict(type='DefaultSampler', shuffle=...)
    shuffle = bool(loader_cfg.get('shuffle', (loader_cfg.get('sampler') or {}).get('shuffle', True)))
    if train:
        # DistributedSampler with one replica is a plain epoch-seeded shuffle; set_epoch(e) seeds it with seed + e
        sampler = EpochKeySampler(DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                                     shuffle=shuffle, seed=seed,
                                                     drop_last=bool(loader_cfg.get('drop_last', False))))
        dataset = EpochSeededDataset(dataset, seed)
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
    if train:
        # the loader draws its workers' base seed from this generator, not from the global torch RNG: how many
        # times it draws (each epoch, or once with persistent workers) must not shift the model's dropout stream
        kwargs['generator'] = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate, worker_init_fn=worker_init_fn,
                      pin_memory=(device_type == 'cuda') if pin_memory is None else bool(pin_memory),
                      drop_last=bool(loader_cfg.get('drop_last', False)) and train, **kwargs)
