"""Random-number state of a training process: seeding, and the states of python, numpy and torch as tensors.

The states are tensors and plain values so that they fit a ``torch.load(weights_only=True)`` checkpoint (mmengine's
checkpoints pickle numpy's state, which such a load refuses); restoring them is what makes a resumed run repeat the
uninterrupted one (dropout, and augmentations drawn in the main process).
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ['set_random_seed', 'get_rng_state', 'set_rng_state']


# Kept by hand: mmengine.runner.set_random_seed seeds the same, but importing mmengine.runner costs ~0.9 s of CPU.
def set_random_seed(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def get_rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (what ``weights_only`` checkpoints can hold)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        'python': torch.tensor(py_state, dtype=torch.int64),  # 625 words of 32 bits
        'python_version': py_version,
        'python_gauss': py_gauss,
        'numpy': torch.from_numpy(np_keys.astype(np.int64)),  # 624 words of 32 bits
        'numpy_name': np_name,
        'numpy_pos': int(np_pos),
        'numpy_has_gauss': int(np_has_gauss),
        'numpy_gauss': float(np_gauss),
        'torch': torch.get_rng_state(),
        'cuda': None,
    }
    # only when CUDA is already in use: asking for the state would otherwise initialise CUDA on CPU runs
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate((state['python_version'], tuple(int(x) for x in state['python'].tolist()),
                     state['python_gauss']))
    np.random.set_state((state['numpy_name'], state['numpy'].numpy().astype(np.uint32), state['numpy_pos'],
                         state['numpy_has_gauss'], state['numpy_gauss']))
    torch.set_rng_state(state['torch'].cpu())
    if state.get('cuda') is not None and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state['cuda']]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:  # different machine: restore what matches
            for i, s in enumerate(cuda_states[:torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)
