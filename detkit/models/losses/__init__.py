"""Loss functions shared by several heads.

SSD's MultiBox loss (cross-entropy with hard-negative mining + Smooth L1) is written out in
:meth:`detkit.models.heads.SSDHead.loss`, the one place that uses it.
"""
