from .fpn import FPN
from .mlfpn import MLFPN
from .ssd_neck import SSDNeck

__all__ = ['SSDNeck', 'FPN', 'MLFPN']
