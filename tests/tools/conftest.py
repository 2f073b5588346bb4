"""Make the toy detector/dataset/metric of tests/engine/toy.py importable as ``toy``; ``load_tool`` imports a
script under tools/ as a module."""
import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINE_TESTS = os.path.join(ROOT, 'tests', 'engine')
if ENGINE_TESTS not in sys.path:
    sys.path.insert(0, ENGINE_TESTS)


@pytest.fixture(scope='session')
def load_tool():
    """``load_tool('tools/x/y.py')``: that script imported as a module named ``y`` (its ``main`` not run)."""
    def load(relpath: str):
        spec = importlib.util.spec_from_file_location(os.path.basename(relpath)[:-3], os.path.join(ROOT, relpath))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    return load
