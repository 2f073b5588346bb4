"""High-level APIs: build a detector from a config and checkpoint, run it on images."""
from .inference import build_test_pipeline, inference_detector, init_detector

__all__ = ['init_detector', 'inference_detector', 'build_test_pipeline']
