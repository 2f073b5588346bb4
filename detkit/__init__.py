"""detkit: a registry-driven, modular one-stage object detection toolbox (SSD, RetinaNet, M2Det)."""
__version__ = '0.1.0'
