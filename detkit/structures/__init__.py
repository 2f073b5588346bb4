"""Box structures and geometry shared by assigners, coders, heads and metrics."""
from .bbox import bbox_area, bbox_cxcywh_to_xyxy, bbox_overlaps, bbox_xyxy_to_cxcywh

__all__ = ['bbox_area', 'bbox_overlaps', 'bbox_xyxy_to_cxcywh', 'bbox_cxcywh_to_xyxy']
