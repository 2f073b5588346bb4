"""Config keys that nothing reads are errors, not silently ignored settings.

A misspelled key (``trian_cfg=...``, ``train_cfg.max_epoch=1``, ``checkpoint.intervall=5``) would otherwise train as
if it were absent. :func:`check_config` runs before anything heavy (the :class:`~detkit.engine.Trainer` and
``tools/test.py`` call it first) and applies two rules:

* **Top level.** :data:`TOP_LEVEL_KEYS` are the keys the engine and the tools read. Any other name is a helper
  variable of the config file (``input_size``, ``mean``, ``classes``, ``train_pipeline``, ...), which the
  file's own entries use and nothing reads directly, so it is allowed, unless it is a close match of a key
  (``difflib`` ratio >= :data:`CLOSE_MATCH`: a typo), an mmengine key that detkit does not honour or an
  mmdetection 2.x key (``runner``, ``optimizer``, ``lr_config``, ``data``, ...: :data:`UNSUPPORTED_KEYS`, each
  with what to write instead). ``log_level`` sets the ``detkit`` logger's level; ``default_scope`` may only be
  ``'detkit'``.
* **Sections.** Inside the engine's sections (``train_cfg``, ``default_hooks`` and each hook, ``env_cfg``,
  ``auto_scale_lr``, ``optim_wrapper`` with its ``optimizer``, ``clip_grad`` and ``paramwise_cfg``, each
  ``param_scheduler`` entry, the dataloaders) every key must be known: the error names the key, the section and
  the closest valid key. ``model``, ``dataset`` and evaluator entries are checked by their builders (a constructor
  does not take unknown arguments).
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Union

import torch

from detkit.registry import OPTIMIZERS, PARAM_SCHEDULERS
from detkit.utils.errors import ConfigKeyError

from .data import LOADER_KEYS
from .logger import log_level_value
from .optimizers import PARAMWISE_KEYS

__all__ = ['ConfigKeyError', 'check_config', 'TOP_LEVEL_KEYS', 'UNSUPPORTED_KEYS', 'MMDET2_KEYS', 'CLOSE_MATCH']

#: top-level keys read by detkit.engine.Trainer, tools/train.py and tools/test.py (and custom_imports, which
#: mmengine's Config.fromfile imports)
TOP_LEVEL_KEYS = frozenset({
    'model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'val_evaluator', 'test_evaluator',
    'optim_wrapper', 'param_scheduler', 'train_cfg', 'auto_scale_lr', 'default_hooks', 'env_cfg', 'seed', 'device',
    'load_from', 'resume', 'launcher', 'find_unused_parameters', 'sync_bn', 'log_level', 'default_scope',
    'custom_imports',
})

#: top-level keys that detkit refuses, and what to use instead: mmengine runner keys that detkit does not honour
#: and the mmdetection 2.x keys of :data:`MMDET2_KEYS`
UNSUPPORTED_KEYS = {
    'custom_hooks': 'detkit has no hooks: the Trainer logs, checkpoints and evaluates itself '
                    '(default_hooks.logger, default_hooks.checkpoint, train_cfg.val_interval)',
    'visualizer': 'training logs go to the console, <timestamp>.log.json and TensorBoard '
                  '(default_hooks.logger.tensorboard); tools/test.py --show-dir draws detections',
    'log_processor': 'the log interval is default_hooks.logger.interval',
    'val_cfg': 'validation runs every train_cfg.val_interval epochs from train_cfg.val_begin',
    'test_cfg': "the detector's test-time settings are model.test_cfg",
    'randomness': 'the seed is the top-level seed (or tools/train.py --seed)',
    'data_preprocessor': 'normalisation and padding are pipeline transforms (Normalize, Pad)',
    'experiment_name': 'logs are named by their start time in work_dir',
}

#: mmdetection 2.x keys (which 3.x replaced) and what mmdetection 3.x and detkit write instead
MMDET2_KEYS = {
    'runner': "train_cfg=dict(max_epochs=N) (runner.max_epochs; detkit trains by epochs only)",
    'optimizer': "optim_wrapper=dict(optimizer=dict(type='SGD', lr=..., momentum=..., weight_decay=...)) "
                 '(the same arguments, one level down)',
    'optimizer_config': 'optim_wrapper.clip_grad=dict(max_norm=...) (optimizer_config.grad_clip)',
    'lr_config': "param_scheduler=[dict(type='LinearLR', start_factor=..., by_epoch=False, begin=0, end=500), "
                 "dict(type='MultiStepLR', by_epoch=True, milestones=[8, 11])] (warmup_ratio -> start_factor, "
                 'warmup_iters -> end, step -> milestones)',
    'data': "train_dataloader=dict(batch_size=samples_per_gpu, num_workers=workers_per_gpu, dataset=data.train), "
            'and val_dataloader / test_dataloader the same way from data.val / data.test',
    'evaluation': "val_evaluator=dict(type='VOCMetric') or dict(type='CocoMetric', metric='bbox') (evaluation.metric), "
                  'train_cfg.val_interval (evaluation.interval) and default_hooks.checkpoint.save_best '
                  '(evaluation.save_best)',
    'checkpoint_config': 'default_hooks.checkpoint=dict(interval=..., max_keep_ckpts=...)',
    'log_config': 'default_hooks.logger=dict(interval=...) (a TensorboardLoggerHook is default_hooks.logger.tensorboard'
                  '=True)',
}
UNSUPPORTED_KEYS.update({key: f"it is mmdetection 2.x's; mmdetection 3.x and detkit write {instead}"
                         for key, instead in MMDET2_KEYS.items()})

#: a top-level name this similar to a known key is taken for a typo of it
CLOSE_MATCH = 0.8


class _Only:
    """A key whose value must be one of ``values`` (other values would be silently ignored)."""

    def __init__(self, *values: Any) -> None:
        self.values = values


# a section: key -> None (any value), _Only(...), a nested section, or a function checking the value
Spec = Union[None, _Only, Mapping[str, Any], Callable[[Any, str, list], None]]


def _signature_keys(cls: Any, skip: tuple[str, ...] = ('self', 'params')) -> set[str] | None:
    """The keyword arguments ``cls`` accepts, or ``None`` when it takes ``**kwargs`` (anything goes)."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.name not in skip}


def _registered(registry: Any, what: str) -> Callable[[Any, str, list], None]:
    """A value check for ``dict(type=..., **arguments)`` of ``registry``: the arguments its class accepts."""

    def check(value: Any, path: str, problems: list) -> None:
        if not isinstance(value, Mapping):
            return
        cls = registry.get(value['type']) if isinstance(value.get('type'), str) else None
        keys = _signature_keys(cls) if cls is not None else None
        if keys is not None:  # an unknown type is the registry's error, with its own suggestions
            _check_keys(value, path, {k: None for k in keys | {'type'}}, problems, f'{what} {value["type"]}')

    return check


def _each(spec: Spec) -> Callable[[Any, str, list], None]:
    """A value check for a dict or a list of dicts, each following ``spec``."""

    def check(value: Any, path: str, problems: list) -> None:
        items = [value] if isinstance(value, Mapping) else list(value or [])
        for i, item in enumerate(items):
            _check_value(item, path if isinstance(value, Mapping) else f'{path}[{i}]', spec, problems)

    return check


_CLIP_GRAD = _signature_keys(torch.nn.utils.clip_grad_norm_, skip=('parameters',)) or set()
_LOADER = {k: None for k in LOADER_KEYS} | {'sampler': {'type': _Only('DefaultSampler'), 'shuffle': None}}

#: the engine's sections and the keys each may hold
SECTIONS: dict[str, Spec] = {
    'train_cfg': {'type': _Only('EpochBasedTrainLoop'), 'max_epochs': None, 'val_interval': None,
                  'val_begin': None},
    'default_hooks': {
        'logger': {'type': _Only('LoggerHook'), 'interval': None, 'tensorboard': None},
        'checkpoint': {'type': _Only('CheckpointHook'), 'interval': None, 'max_keep_ckpts': None, 'save_best': None,
                       'rule': None},
    },
    'env_cfg': {'num_threads': None, 'opencv_num_threads': None, 'cudnn_benchmark': None},
    'auto_scale_lr': {'enable': None, 'base_batch_size': None},
    'optim_wrapper': {'type': _Only('OptimWrapper', 'AmpOptimWrapper'), 'dtype': None, 'native_bf16_only': None,
                      'optimizer': _registered(OPTIMIZERS, 'optimizer'),
                      'clip_grad': {k: None for k in _CLIP_GRAD},
                      'paramwise_cfg': {k: None for k in PARAMWISE_KEYS}},
    'param_scheduler': _each(_registered(PARAM_SCHEDULERS, 'scheduler')),
    'train_dataloader': _LOADER,
    'val_dataloader': _LOADER,
    'test_dataloader': _LOADER,
}


def _closest(key: str, choices: Any, cutoff: float = 0.6) -> str | None:
    found = difflib.get_close_matches(key, sorted(choices), n=1, cutoff=cutoff)
    return found[0] if found else None


def _check_keys(value: Mapping, path: str, spec: Mapping[str, Any], problems: list, section: str = '') -> None:
    section = section or path
    for key in value:
        if key not in spec:
            close = _closest(str(key), spec)
            hint = f'; did you mean {close!r}?' if close else ''
            problems.append(f'unknown key {key!r} in {section}{hint} Nothing reads it, so it would be ignored '
                            f'({section} keys: {", ".join(sorted(spec))})')
        else:
            _check_value(value[key], f'{path}.{key}', spec[key], problems)


def _check_value(value: Any, path: str, spec: Spec, problems: list) -> None:
    if spec is None:
        return
    if isinstance(spec, _Only):
        if value not in spec.values:
            problems.append(f'{path}={value!r} is not supported; detkit supports {" or ".join(map(repr, spec.values))}'
                            ' (another value would be ignored)')
    elif isinstance(spec, Mapping):
        if isinstance(value, Mapping):  # None keeps the defaults
            _check_keys(value, path, spec, problems)
    else:
        spec(value, path, problems)


def check_config(cfg: Mapping[str, Any], filename: str | None = None) -> None:
    """Raise :class:`ConfigKeyError` listing every config key that nothing would read (see the module docstring).

    Args:
        cfg: the loaded config (after ``--cfg-options``).
        filename: named in the message (default: ``cfg.filename`` when the config came from a file).

    Raises:
        ConfigKeyError: naming each such key, where it is, and the closest valid key.
        ValueError: an invalid ``log_level``.
    """
    problems: list[str] = []
    for key in cfg:
        if key in UNSUPPORTED_KEYS:
            problems.append(f'{key!r} is not supported by detkit: {UNSUPPORTED_KEYS[key]}; remove it')
        elif key not in TOP_LEVEL_KEYS:
            close = _closest(key, TOP_LEVEL_KEYS | set(UNSUPPORTED_KEYS), CLOSE_MATCH)
            if close:
                problems.append(f'unknown top-level key {key!r}; did you mean {close!r}? Nothing reads {key!r}, '
                                'so it would be ignored')
        elif key in SECTIONS:
            _check_value(cfg[key], key, SECTIONS[key], problems)
    scope = cfg.get('default_scope')
    if scope not in (None, 'detkit'):
        problems.append(f"default_scope={scope!r} is not supported: detkit's registries are the 'detkit' scope")
    if cfg.get('log_level') is not None:
        log_level_value(cfg['log_level'])
    if problems:
        filename = filename or getattr(cfg, 'filename', None)
        where = f'config {filename}' if filename else 'the config'
        if len(problems) == 1:
            raise ConfigKeyError(f'{where}: {problems[0]}')
        raise ConfigKeyError(f'{where} has {len(problems)} problems:\n' + '\n'.join(f'  - {p}' for p in problems))
