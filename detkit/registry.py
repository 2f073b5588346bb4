"""Registries of detkit: every buildable component is looked up here by its ``type`` name.

Components register themselves with a decorator::

    from detkit.registry import MODELS

    @MODELS.register_module()
    class SSDHead(nn.Module):
        ...

and are built from a config dict by the registry, which is the only code that reads config dicts::

    head = MODELS.build(dict(type='SSDHead', num_classes=20, in_channels=(512, 1024)))

An unknown ``type`` raises a ``KeyError`` that names the registry and the closest registered names, so a
typo such as ``type='SDDHead'`` says ``did you mean 'SSDHead'?`` instead of failing deep inside a build.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from mmengine.registry import Registry as _MMRegistry

__all__ = [
    'Registry', 'build_if_config', 'MODELS', 'TASK_UTILS', 'DATASETS', 'TRANSFORMS', 'METRICS', 'OPTIMIZERS',
    'PARAM_SCHEDULERS'
]


class Registry(_MMRegistry):
    """mmengine ``Registry`` whose unknown-type errors name the registry and suggest close names."""

    def registered_names(self) -> list[str]:
        """All names in this registry, after importing the modules listed in ``locations``."""
        self.import_from_location()
        return sorted(self.module_dict)

    def close_names(self, name: str, n: int = 3) -> list[str]:
        """The registered names closest to ``name`` (case-insensitive), best first."""
        names = self.registered_names()
        by_lower = {k.lower(): k for k in names}
        matches = difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.5)
        return [by_lower[m] for m in matches]

    def build(self, cfg: Any, *args: Any, **kwargs: Any) -> Any:
        """Build an object from a config dict (or a list of objects from a list of dicts)."""
        if isinstance(cfg, (list, tuple)):
            return [self.build(c, *args, **kwargs) for c in cfg]
        if isinstance(cfg, dict):
            if 'type' not in cfg:
                raise KeyError(f'cannot build from the {self.name!r} registry: the config has no "type" key '
                               f'(keys: {sorted(cfg)})')
            obj_type = cfg['type']
            if isinstance(obj_type, str) and self.get(obj_type) is None:
                close = self.close_names(obj_type.split('.')[-1])
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
                raise KeyError(f'{obj_type!r} is not registered in the {self.scope}::{self.name} registry.{hint} '
                               f'Registered names: {", ".join(self.registered_names())}')
        return super().build(cfg, *args, **kwargs)


def build_if_config(obj: Any, registry: Registry, what: str, **default_args: Any) -> Any:
    """``obj`` itself when it is already built, else ``registry.build(obj)`` for a config dict.

    Parts take either a built object (so that everything can be made without a config) or its config; this is the
    one place that tells them apart.

    Args:
        obj: a built object or a config dict with a ``type`` key.
        registry: where to look the type up.
        what: the argument's name, for the error message.
        **default_args: filled into the config where it does not set them.

    Raises:
        TypeError: naming ``what`` when ``obj`` is ``None`` or a type that is neither.
    """
    if isinstance(obj, Mapping):
        cfg = dict(obj)
        for key, value in default_args.items():
            cfg.setdefault(key, value)
        return registry.build(cfg)
    if obj is None or isinstance(obj, (str, int, float, list, tuple)):
        raise TypeError(f'{what} must be a built object or a config dict with a "type" key, got {obj!r}')
    return obj


def _registry(name: str, locations: list[str]) -> Registry:
    return Registry(name, scope='detkit', locations=locations)


#: backbones, necks, heads, detectors and losses
MODELS = _registry('model', ['detkit.models'])
#: anchor (prior) generators, assigners and box coders
TASK_UTILS = _registry('task util', ['detkit.task_modules'])
#: datasets and dataset wrappers
DATASETS = _registry('dataset', ['detkit.datasets'])
#: data transforms used in pipelines
TRANSFORMS = _registry('transform', ['detkit.datasets.transforms'])
#: evaluation metrics
METRICS = _registry('metric', ['detkit.evaluation'])
#: optimizers (the torch.optim ones are registered by the engine)
OPTIMIZERS = _registry('optimizer', ['detkit.engine'])
#: learning-rate schedules
PARAM_SCHEDULERS = _registry('parameter scheduler', ['detkit.engine'])
