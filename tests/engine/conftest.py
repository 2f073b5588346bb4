"""Shared setup of the engine, apis and tools tests: the toy parts (``toy.py``) importable as ``toy``."""
import os
import sys


ENGINE_TESTS = os.path.dirname(os.path.abspath(__file__))
if ENGINE_TESTS not in sys.path:
    sys.path.insert(0, ENGINE_TESTS)
