"""Fixtures shared by every test directory: the four shared COCO photos."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_images_dir() -> Path:
    """The folder of the 4 shared COCO val2014 JPEGs.

    Looked up as ``$DETKIT_SHARED_DATA`` (the ``data`` folder or its ``images`` subfolder), then
    ``<repo>/../shared/data/images`` (CI clones the repo beside ``shared/``), then ``/work/shared/data/images``.
    A missing folder fails the test with the paths tried: these tests must run in CI, not be skipped.
    """
    tried = []
    env = os.environ.get('DETKIT_SHARED_DATA')
    if env:
        tried += [Path(env) / 'images', Path(env)]
    tried += [REPO.parent / 'shared' / 'data' / 'images', Path('/work/shared/data/images')]
    for path in tried:
        if path.is_dir() and any(path.glob('*.jpg')):
            return path
    pytest.fail('shared test images not found; tried ' + ', '.join(str(p) for p in tried)
                + ' (set DETKIT_SHARED_DATA to the shared data folder)')


@pytest.fixture(scope='session')
def shared_jpegs() -> list[str]:
    """The paths of the shared JPEGs, sorted (at least 4)."""
    paths = sorted(str(p) for p in shared_images_dir().glob('*.jpg'))
    assert len(paths) >= 4, paths
    return paths
