"""Fixtures for the dataset and transform tests: a small generated shapes dataset (the shared COCO photos are in
tests/conftest.py)."""
from __future__ import annotations

import pytest

from detkit.datasets.shapes import write_shapes


@pytest.fixture(scope='session')
def shapes_root(tmp_path_factory) -> str:
    """12 shapes images (160 px) written in all three formats into one folder; returns the folder."""
    root = tmp_path_factory.mktemp('shapes')
    write_shapes(str(root), num=12, fmt='all', seed=7, size=160, split='train')
    return str(root)
