"""Dataset wrappers: concatenation (VOC07+12) and repetition (short epochs on small datasets), and
:func:`find_dataset_attr`, which looks through them."""
from __future__ import annotations

import bisect
import collections
from typing import Any, Sequence

import numpy as np

from detkit.registry import DATASETS, build_if_config

__all__ = ['ConcatDataset', 'RepeatDataset', 'find_dataset_attr']


def find_dataset_attr(dataset: Any, attr: str, _depth: int = 0) -> list[Any]:
    """Every object in ``dataset`` that has ``attr``, looking through wrappers (``RepeatDataset``-like ones hold
    ``dataset``, ``ConcatDataset``-like ones ``datasets``), in order.

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


@DATASETS.register_module()
class ConcatDataset:
    """Items of several datasets one after another (e.g. VOC2007 trainval + VOC2012 trainval).

    Args:
        datasets: datasets or their config dicts. Their ``metainfo['classes']`` must be equal, so that a label
            means the same class in every part.

    Raises:
        ValueError: naming the first dataset whose classes differ from the first one's.
    """

    def __init__(self, datasets: Sequence[Any]) -> None:
        if not datasets:
            raise ValueError('ConcatDataset: datasets is empty')
        self.datasets = [build_if_config(d, DATASETS, f'ConcatDataset.datasets[{i}]') for i, d in enumerate(datasets)]
        classes0 = tuple(self.datasets[0].metainfo['classes'])
        for i, d in enumerate(self.datasets[1:], start=1):
            classes = tuple(d.metainfo['classes'])
            if classes != classes0:
                raise ValueError(f'ConcatDataset: dataset {i} ({d!r}) has classes {classes}, but dataset 0 has '
                                 f'{classes0}; concatenated datasets must agree on the class list')
        self.cumulative_sizes = np.cumsum([len(d) for d in self.datasets]).tolist()

    @property
    def metainfo(self) -> dict[str, Any]:
        """The first dataset's metainfo (all agree on ``classes``)."""
        return self.datasets[0].metainfo

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def _locate(self, idx: int) -> tuple[Any, int]:
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f'ConcatDataset: index {idx} out of range for {n} items')
        idx %= n
        part = bisect.bisect_right(self.cumulative_sizes, idx)
        start = self.cumulative_sizes[part - 1] if part else 0
        return self.datasets[part], idx - start

    def __getitem__(self, idx: int) -> dict:
        dataset, local = self._locate(idx)
        sample = dataset[local]
        if isinstance(sample, dict) and isinstance(sample.get('meta'), dict):
            sample['meta']['sample_idx'] = int(idx) % len(self)  # index into THIS dataset, for the metric
        return sample

    def get_ann_info(self, idx: int) -> dict[str, np.ndarray]:
        """Annotations of item ``idx`` in original-image pixels."""
        dataset, local = self._locate(idx)
        return dataset.get_ann_info(local)

    def get_data_info(self, idx: int) -> dict:
        dataset, local = self._locate(idx)
        return dataset.get_data_info(local)

    def get_cat_ids(self, idx: int) -> list[int]:
        dataset, local = self._locate(idx)
        return dataset.get_cat_ids(local)

    @property
    def bad_items(self) -> collections.Counter[str]:
        """Bad items of all parts, by reason."""
        total: collections.Counter[str] = collections.Counter()
        for d in self.datasets:
            total.update(getattr(d, 'bad_items', {}))
        return total

    def summary(self) -> str:
        return 'ConcatDataset: ' + ' | '.join(d.summary() if hasattr(d, 'summary') else repr(d)
                                              for d in self.datasets)

    def __repr__(self) -> str:
        return f'ConcatDataset({len(self.datasets)} datasets, items={len(self)})'


@DATASETS.register_module()
class RepeatDataset:
    """A dataset repeated ``times`` times, so that one epoch of the loader covers it ``times`` times.

    Args:
        dataset: the dataset or its config dict.
        times: repetitions (>= 1).
    """

    def __init__(self, dataset: Any, times: int) -> None:
        if int(times) < 1:
            raise ValueError(f'RepeatDataset: times must be >= 1, got {times}')
        self.dataset = build_if_config(dataset, DATASETS, 'RepeatDataset.dataset')
        self.times = int(times)
        self._ori_len = len(self.dataset)

    @property
    def metainfo(self) -> dict[str, Any]:
        return self.dataset.metainfo

    def __len__(self) -> int:
        return self.times * self._ori_len

    def __getitem__(self, idx: int) -> dict:
        return self.dataset[idx % self._ori_len]

    def get_ann_info(self, idx: int) -> dict[str, np.ndarray]:
        return self.dataset.get_ann_info(idx % self._ori_len)

    def get_data_info(self, idx: int) -> dict:
        return self.dataset.get_data_info(idx % self._ori_len)

    def get_cat_ids(self, idx: int) -> list[int]:
        return self.dataset.get_cat_ids(idx % self._ori_len)

    @property
    def bad_items(self) -> collections.Counter[str]:
        return collections.Counter(getattr(self.dataset, 'bad_items', {}))

    def summary(self) -> str:
        inner = self.dataset.summary() if hasattr(self.dataset, 'summary') else repr(self.dataset)
        return f'RepeatDataset(x{self.times}): {inner}'

    def __repr__(self) -> str:
        return f'RepeatDataset(times={self.times}, dataset={self.dataset!r})'
