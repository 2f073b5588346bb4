from .anchor_generator import AnchorGenerator
from .ssd_anchor_generator import SSDAnchorGenerator, ssd_anchor_sizes

__all__ = ['AnchorGenerator', 'SSDAnchorGenerator', 'ssd_anchor_sizes']
