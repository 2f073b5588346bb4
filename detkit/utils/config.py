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
        SyntaxError: naming the file (the config or one of its ``_base_`` files) and the line.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
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


def _find_syntax_error(path: str, seen: set[str]) -> SyntaxError | None:
    """The ``SyntaxError`` (with its file name) of ``path`` or of a ``_base_`` file it inherits from, if any."""
    path = os.path.abspath(path)
    if path in seen or not os.path.isfile(path):
        return None
    seen.add(path)
    with open(path, encoding='utf-8') as f:
        source = f.read()
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as err:
        return err
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == '_base_' for t in node.targets):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                continue
            for base in [bases] if isinstance(bases, str) else list(bases):
                # package bases ('mmdet::...') and predefined variables are mmengine's to resolve
                if isinstance(base, str) and '::' not in base and '{{' not in base:
                    err = _find_syntax_error(os.path.join(os.path.dirname(path), base), seen)
                    if err is not None:
                        return err
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
