"""RNG states: a weights-only checkpoint holds them, and restoring them repeats every stream exactly."""
import random

import numpy as np
import torch

from detkit.engine.checkpoint import load_checkpoint, save_checkpoint
from detkit.engine.rng import get_rng_state, set_rng_state


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.randn()
    save_checkpoint({'rng': get_rng_state()}, tmp_path / 'rng.pth')
    expected = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(),
                torch.rand(3).tolist())
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    set_rng_state(load_checkpoint(tmp_path / 'rng.pth')['rng'])
    got = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist())
    assert got == expected

