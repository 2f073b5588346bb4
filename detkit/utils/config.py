"""Config loading: mmengine ``Config`` files with ``_base_`` inheritance and command-line overrides."""
from __future__ import annotations

import argparse
import ast
import copy
import os
from collections.abc import Sequence
from typing import Any

from mmengine.config import Config
from mmengine.config import DictAction as _MMDictAction

from .errors import ConfigError

__all__ = ['Config', 'DictAction', 'load_config', 'parse_option_value']


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
        ValueError: naming the files of a ``_base_`` cycle in inheritance order (``a.py -> b.py -> a.py``).
        SyntaxError: naming the file (the config or one of its ``_base_`` files) and the line.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    cycle = _find_base_cycle(os.path.normpath(path), [], set())
    if cycle is not None:  # mmengine would recurse until a RecursionError
        raise ConfigError(f'config file {path}: its _base_ files inherit from each other in a cycle: '
                         + ' -> '.join(cycle))
    try:
        cfg = Config.fromfile(path)
    except SyntaxError as err:
        # mmengine parses the files without their names, so the traceback shows File "<unknown>"
        located = _find_syntax_error(path, set())
        if located is None:
            raise
        raise SyntaxError(f'{located.msg} in config file {located.filename}',
                          (located.filename, located.lineno, located.offset, located.text)) from None
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _base_paths(path: str) -> list[str]:
    """The ``_base_`` files that the config ``path`` names, joined to its folder (``ast``-read, not run).

    Package bases (``mmdet::...``) and predefined variables (``{{fileDirname}}``) are left out: they are mmengine's
    to resolve.

    Raises:
        SyntaxError: ``path`` is not valid Python (its ``filename`` is ``path``).
    """
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), filename=path)
    out = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == '_base_' for t in node.targets):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                continue
            for base in [bases] if isinstance(bases, str) else list(bases):
                if isinstance(base, str) and '::' not in base and '{{' not in base:
                    out.append(os.path.normpath(os.path.join(os.path.dirname(path), base)))
    return out


def _find_syntax_error(path: str, seen: set[str]) -> SyntaxError | None:
    """The ``SyntaxError`` (with its file name) of ``path`` or of a ``_base_`` file it inherits from, if any."""
    path = os.path.abspath(path)
    if path in seen or not os.path.isfile(path):
        return None
    seen.add(path)
    try:
        bases = _base_paths(path)
    except SyntaxError as err:
        return err
    for base in bases:
        err = _find_syntax_error(base, seen)
        if err is not None:
            return err
    return None


def _find_base_cycle(path: str, chain: list[str], done: set[str]) -> list[str] | None:
    """The first ``_base_`` cycle reachable from ``path`` as ``[a, b, ..., a]``, or ``None``.

    Args:
        path: a config file (as the user or its parent's ``_base_`` wrote it, normalised).
        chain: the files that inherit from ``path``, outermost first.
        done: real paths already searched without finding a cycle.
    """
    real = os.path.realpath(path)
    reals = [os.path.realpath(p) for p in chain]
    if real in reals:
        return chain[reals.index(real):] + [path]
    if real in done or not os.path.isfile(path) or not path.endswith('.py'):
        return None
    try:
        bases = _base_paths(path)
    except (SyntaxError, UnicodeDecodeError):  # reported by load_config with the file's name
        return None
    for base in bases:
        cycle = _find_base_cycle(base, chain + [path], done)
        if cycle is not None:
            return cycle
    done.add(real)
    return None


def _split_top_level(text: str) -> list[str]:
    """``text`` split at the commas that are outside brackets and parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in '([':
            depth += 1
        elif char in ')]':
            depth -= 1
        elif char == ',' and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_option_value(text: str) -> Any:
    """One ``--cfg-options`` value: mmengine's rules, plus ``dict(key=value, ...)``.

    As in mmengine: numbers, ``True``/``False``/``None``, bare words as strings, ``[a, b]`` lists, ``(a, b)``
    tuples, ``a,b`` lists (outer quotes dropped). ``dict(type=Pretrained, checkpoint=x.pth)`` builds a dict whose
    values follow the same rules (mmengine recursed without end on it). Spaces around an item, a bracket, a comma
    or a ``=`` are dropped; spaces inside an item are kept (``/tmp/my data/``, ``big circle,square`` ->
    ``['big circle', 'square']``), where mmengine removed every space.

    Raises:
        ValueError: brackets that do not balance, or a ``dict(...)`` entry that is not ``key=value``.
    """
    text = text.strip().strip('\'"').strip()
    if text.count('(') != text.count(')') or text.count('[') != text.count(']'):
        raise ValueError('unbalanced brackets')
    if text.startswith('dict(') and _split_top_level(text) == [text] and text.endswith(')'):
        out = {}
        for item in _split_top_level(text[5:-1]):
            if not item.strip():
                continue
            key, sep, value = item.partition('=')
            key = key.strip()
            if not sep or not key.isidentifier():
                raise ValueError(f'{item!r} is not key=value inside dict(...)')
            out[key] = parse_option_value(value)
        return out
    is_tuple = text.startswith('(') and text.endswith(')')
    if is_tuple or (text.startswith('[') and text.endswith(']')):
        text = text[1:-1]
    elif ',' not in text:
        return _MMDictAction._parse_int_float_bool(text)
    values = [parse_option_value(part) for part in _split_top_level(text) if part.strip()]
    return tuple(values) if is_tuple else values


class DictAction(_MMDictAction):
    """mmengine's ``--cfg-options KEY=VALUE ...`` action, with ``dict(...)`` values (see
    :func:`parse_option_value`) and argument errors instead of crashes for malformed options."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        options = copy.copy(getattr(namespace, self.dest, None) or {})
        for kv in values or []:
            key, sep, value = kv.partition('=')
            key = key.strip()
            if not sep or not key:
                parser.error(f'{option_string}: {kv!r} is not KEY=VALUE')
            try:
                options[key] = parse_option_value(value)
            except ValueError as err:
                parser.error(f'{option_string}: cannot read {kv!r}: {err}')
        setattr(namespace, self.dest, options)
