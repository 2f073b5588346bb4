"""Config loading: mmengine ``Config`` files with ``_base_`` inheritance and command-line overrides."""
from __future__ import annotations

import os
from typing import Any

from mmengine.config import Config, DictAction

__all__ = ['Config', 'DictAction', 'load_config']


def load_config(path: str | os.PathLike, cfg_options: dict[str, Any] | None = None) -> Config:
    """Read a Python config file and apply dotted overrides.

    Args:
        path: a ``.py`` config; its ``_base_`` files are merged first, then the file's own keys.
        cfg_options: overrides such as ``{'model.bbox_head.num_classes': 3}`` (what ``--cfg-options``
            collects with :class:`mmengine.config.DictAction`). A list index may be written as a key,
            e.g. ``{'train_pipeline.2.scale': (512, 512)}``.

    Returns:
        The merged :class:`mmengine.config.Config`. ``cfg.pretty_text`` prints it and ``cfg.dump(file)``
        writes a file that :func:`load_config` reads back to the same config.

    Raises:
        FileNotFoundError: naming the config path when it does not exist.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg
