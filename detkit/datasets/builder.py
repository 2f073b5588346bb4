"""``build_dataset``: a dataset (or wrapper) from its config dict."""
from __future__ import annotations

from typing import Any

from detkit.registry import DATASETS, build_if_config

__all__ = ['build_dataset']


def build_dataset(cfg: dict | Any, default_args: dict | None = None) -> Any:
    """Build a dataset from a config such as ``dict(type='VOCDataset', data_root=..., ann_file=..., ...)``.

    Wrappers (``RepeatDataset``, ``ConcatDataset``) build their inner dataset configs themselves. An already
    built dataset is returned unchanged.

    Args:
        cfg: the config dict (an mmengine ``ConfigDict`` works) or a built dataset.
        default_args: arguments added to ``cfg`` where it does not set them (e.g. ``dict(test_mode=True)``).

    Raises:
        TypeError: ``cfg`` is neither (``None``, a string, a list, ...).
    """
    return build_if_config(cfg, DATASETS, 'dataset', **(default_args or {}))
