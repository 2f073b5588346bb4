from .ssd_neck import SSDNeck

__all__ = ['SSDNeck']
