"""Fixtures shared by every test directory: the four shared COCO photos, a random detector head made sane."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto --dist loadfile``: a test file runs on one worker, in order)
    each worker, and each process its tests start, runs torch on one intra-op thread: every worker with the default
    pool would oversubscribe the cores."""
    if os.environ.get('PYTEST_XDIST_WORKER'):
        os.environ['OMP_NUM_THREADS'] = '1'
        torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files with the most ``slow`` tests first, each file's tests in their own order.

    ``--dist loadfile`` hands whole files to the workers in collection order: the long files started first leave
    the short ones to fill the end, instead of one long file running alone after the rest. The order inside a file
    is kept (the tutorial blocks run as a chain).
    """
    def file_of(item: pytest.Item) -> str:
        return item.nodeid.split('::')[0]

    slow: dict[str, int] = {}
    for item in items:
        slow[file_of(item)] = slow.get(file_of(item), 0) + bool(item.get_closest_marker('slow'))
    position = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (-slow[file_of(item)], position[id(item)]))


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


def _calibrate_head(model: nn.Module, inputs: torch.Tensor, cls_bias: tuple[float, float]) -> None:
    """Scale the head's output convs of a random detector to unit output spread on ``inputs`` (a normalised
    ``Tensor[N, 3, H, W]``), zero box biases, classification biases ~ N(mean, std) = ``cls_bias``.

    A random network's raw outputs make boxes thousands of pixels wide or a pixel thin, whose IoUs (hence NMS and
    soft-NMS decisions) react to float rounding; scaled, the boxes are anchor-like and comparisons meaningful.
    """
    head = model.bbox_head
    cls_channels = {a * head.cls_out_channels for a in head.num_base_priors}
    outputs: dict[nn.Module, list[torch.Tensor]] = {}
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)
             and m.out_channels in cls_channels | {a * 4 for a in head.num_base_priors}]
    hooks = [c.register_forward_hook(lambda m, i, o: outputs.setdefault(m, []).append(o)) for c in convs]
    with torch.no_grad():
        model(inputs)
        for h in hooks:
            h.remove()
        g = torch.Generator().manual_seed(0)
        for conv, outs in outputs.items():
            conv.weight /= torch.cat([o.flatten() for o in outs]).std().clamp(min=1e-6)
            if conv.out_channels in cls_channels:
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * cls_bias[1] + cls_bias[0])
            else:
                conv.bias.zero_()


@pytest.fixture
def calibrate_head():
    """``calibrate_head(model, inputs, (bias_mean, bias_std))``: see :func:`_calibrate_head`."""
    return _calibrate_head
