"""Models: backbones, necks, heads and detectors.

Importing this package registers them in ``detkit.registry.MODELS``.
"""
from . import backbones, detectors, heads, losses, necks, utils  # noqa: F401
from .backbones import SSDVGG, MobileNetV2, ResNet
from .detectors import SingleStageDetector
from .heads import SSDHead
from .necks import SSDNeck

__all__ = ['SSDVGG', 'ResNet', 'MobileNetV2', 'SSDNeck', 'SSDHead', 'SingleStageDetector']
