"""``Compose``: run a list of transforms (built from config dicts) one after another."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from detkit.registry import TRANSFORMS, build_if_config

__all__ = ['Compose']


@TRANSFORMS.register_module()
class Compose:
    """Apply transforms in order to a ``results`` dict.

    Args:
        transforms: transform objects (callables taking and returning a ``results`` dict) or config dicts such
            as ``dict(type='Resize', scale=(300, 300))``, built from the ``TRANSFORMS`` registry.

    A transform may return ``None`` to drop the sample; :class:`Compose` then returns ``None`` at once and the
    dataset draws another sample.
    """

    def __init__(self, transforms: Sequence[dict | Callable[[dict], dict | None]] | None) -> None:
        self.transforms: list[Callable[[dict], dict | None]] = []
        for i, t in enumerate(transforms or []):
            t = build_if_config(t, TRANSFORMS, f'pipeline step {i}')
            if not callable(t):
                raise TypeError(f'pipeline step {i} must be a config dict or a callable, got {type(t).__name__}')
            self.transforms.append(t)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any] | None:
        for t in self.transforms:
            results = t(results)
            if results is None:
                return None
        return results

    def __repr__(self) -> str:
        body = ''.join(f'\n    {t!r},' for t in self.transforms)
        return f'Compose([{body}\n])'
