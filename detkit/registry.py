"""Registries of detkit: every buildable component is looked up here by its ``type`` name.

Components register themselves with a decorator::

    from detkit.registry import MODELS

    @MODELS.register_module()
    class SSDHead(nn.Module):
        ...

and are built from a config dict by the registry, which is the only code that reads config dicts::

    head = MODELS.build(dict(type='SSDHead', num_classes=20, in_channels=(512, 1024)))

An unknown ``type`` raises a ``KeyError`` that names the registry and the closest registered names, so a
typo such as ``type='SDDHead'`` says ``did you mean 'SSDHead'?`` instead of failing deep inside a build. An
argument the component does not take (``frozen_stage=1``), or a required one that is missing, raises a
``TypeError`` naming the registry, the type, the argument, the closest valid one and all of them::

    detkit::model ResNet: unexpected argument 'frozen_stage'; did you mean 'frozen_stages'? (ResNet takes: ...)
"""
from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Mapping
from typing import Any

from mmengine.registry import Registry as _MMRegistry

from detkit.utils.errors import ConfigKeyError, ConfigTypeError
from mmengine.utils import ManagerMixin

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
        """Build an object from a config dict (or a list of objects from a list of dicts).

        Args:
            cfg: ``dict(type=name or class, **arguments)``, or a list of them.
            *args: ``default_args``, as for mmengine's ``Registry.build``.
            **kwargs: ``default_args``: arguments filled in where ``cfg`` does not set them.

        Raises:
            KeyError: no ``type`` key, or a type that is not registered (naming the closest registered names).
            TypeError: an argument the type does not take, or a required one that is missing (see the module
                docstring); a ``TypeError`` raised inside the constructor's body is not changed.
        """
        if isinstance(cfg, (list, tuple)):
            return [self.build(c, *args, **kwargs) for c in cfg]
        if not isinstance(cfg, dict):
            return super().build(cfg, *args, **kwargs)
        if 'type' not in cfg:
            raise ConfigKeyError(f'cannot build from the {self.name!r} registry: the config has no "type" key '
                           f'(keys: {sorted(cfg)})')
        obj_type = cfg['type']
        if isinstance(obj_type, str) and self.get(obj_type) is None:
            close = self.close_names(obj_type.split('.')[-1])
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
            raise ConfigKeyError(f'{obj_type!r} is not registered in the {self.scope}::{self.name} registry.{hint} '
                           f'Registered names: {", ".join(self.registered_names())}')
        obj_cls = self.get(obj_type) if isinstance(obj_type, str) else obj_type
        default_args = args[0] if args else kwargs.get('default_args')
        arguments = {k: v for k, v in {**(default_args or {}), **cfg}.items() if k not in ('type', '_scope_')}
        self._check_arguments(obj_cls, arguments)
        try:
            return super().build(cfg, *args, **kwargs)
        except TypeError as err:
            # a class taking **kwargs and passing them to its base's __init__: only the call can tell
            bad = _forwarded_unexpected_argument(obj_cls, err)
            if bad is None or bad not in arguments:
                raise
            raise ConfigTypeError(self._argument_error(obj_cls, f'unexpected argument {bad!r}', bad)) from None

    def _check_arguments(self, obj_cls: Any, arguments: dict[str, Any]) -> None:
        """Raise the ``TypeError`` of the module docstring when ``arguments`` do not fit ``obj_cls``'s signature.

        Only a signature without ``**kwargs`` is checked here (a class with ``**kwargs`` is checked by its call);
        the constructor is not run.
        """
        if inspect.isclass(obj_cls) and issubclass(obj_cls, ManagerMixin):
            return  # built by get_instance(name, ...)
        try:
            signature = inspect.signature(obj_cls)
        except (TypeError, ValueError):
            return
        params = signature.parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return
        by_name = {p.name: p for p in params
                   if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
        for key in arguments:
            if key not in by_name:
                raise ConfigTypeError(self._argument_error(obj_cls, f'unexpected argument {key!r}', key)) from None
        for name, p in by_name.items():
            if p.default is inspect.Parameter.empty and name not in arguments:
                raise ConfigTypeError(self._argument_error(obj_cls, f'missing argument {name!r}')) from None

    def _argument_error(self, obj_cls: Any, problem: str, wrong: str | None = None) -> str:
        """``'<scope>::<registry> <Type>: <problem>; did you mean <closest>? (<Type> takes: ...)'``."""
        name = getattr(obj_cls, '__name__', repr(obj_cls))
        accepted = _accepted_arguments(obj_cls)
        close = difflib.get_close_matches(wrong, accepted, n=1, cutoff=0.5) if wrong else []
        hint = f'; did you mean {close[0]!r}?' if close else ''
        return f'{self.scope}::{self.name} {name}: {problem}{hint} ({name} takes: {", ".join(accepted) or "nothing"})'


def _accepted_arguments(obj_cls: Any) -> list[str]:
    """The keyword arguments of ``obj_cls`` in signature order, following ``**kwargs`` into the bases' ``__init__``
    (the way detkit's datasets pass theirs on) until one without ``**kwargs``."""
    out: list[str] = []
    funcs = ([k.__dict__['__init__'] for k in obj_cls.__mro__ if '__init__' in k.__dict__ and k is not object]
             if inspect.isclass(obj_cls) else [obj_cls])
    for i, func in enumerate(funcs):
        try:
            params = list(inspect.signature(func).parameters.values())
        except (TypeError, ValueError):
            break
        if inspect.isclass(obj_cls) and params:
            params = params[1:]  # self
        out += [p.name for p in params if p.name not in out and p.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    return out


def _forwarded_unexpected_argument(obj_cls: Any, err: TypeError) -> str | None:
    """The argument name when ``err`` is an ``__init__`` of ``obj_cls``'s bases refusing a keyword that one of
    ``obj_cls``'s own ``__init__`` methods passed on (the call itself failed, not code inside the base); else
    ``None``."""
    if not inspect.isclass(obj_cls):
        return None
    try:
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(obj_cls).parameters.values()):
            return None  # its own signature was checked before the call: a base refusing is the class's bug
    except (TypeError, ValueError):
        return None
    found = re.fullmatch(r"(\S+)\.__init__\(\) got an unexpected keyword argument '(\w+)'", str(err))
    if found is None or found.group(1) not in {k.__qualname__ for k in obj_cls.__mro__}:
        return None
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    init_codes = {getattr(k.__dict__['__init__'], '__code__', None)
                  for k in obj_cls.__mro__ if '__init__' in k.__dict__}
    return found.group(2) if tb is not None and tb.tb_frame.f_code in init_codes else None


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
