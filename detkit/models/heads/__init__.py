from .anchor_head import AnchorHead, AnchorTargets, flatten_levels
from .retina_head import RetinaHead
from .ssd_head import SSDHead

__all__ = ['AnchorHead', 'AnchorTargets', 'flatten_levels', 'SSDHead', 'RetinaHead']
