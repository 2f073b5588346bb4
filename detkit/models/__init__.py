"""Models: backbones, necks, heads and detectors.

Importing this package registers them in ``detkit.registry.MODELS``.
"""
from . import backbones, detectors, heads, losses, necks, utils  # noqa: F401
from .backbones import SSDVGG, MobileNetV2, ResNet
from .detectors import SingleStageDetector
from .heads import AnchorHead, RetinaHead, SSDHead
from .necks import FPN, MLFPN, SSDNeck

__all__ = ['SSDVGG', 'ResNet', 'MobileNetV2', 'SSDNeck', 'FPN', 'MLFPN', 'AnchorHead', 'SSDHead', 'RetinaHead',
           'SingleStageDetector']
