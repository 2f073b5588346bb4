from .ssd_anchor_generator import SSDAnchorGenerator, ssd_anchor_sizes

__all__ = ['SSDAnchorGenerator', 'ssd_anchor_sizes']
