"""Make the toy detector/dataset/metric of tests/engine/toy.py importable as ``toy``."""
import os
import sys


ENGINE_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'engine')
if ENGINE_TESTS not in sys.path:
    sys.path.insert(0, ENGINE_TESTS)
