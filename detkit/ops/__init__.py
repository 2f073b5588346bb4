"""Operators: NMS (compiled in ``detkit._C`` with a pure-PyTorch fallback).

Importing this package loads ``detkit._C`` when it is built, so ``torch.ops.detkit.*`` exist afterwards.
"""
from ._ext import ext_module
from .nms import batched_nms, batched_soft_nms, nms, soft_nms

ext_module()

__all__ = ['nms', 'batched_nms', 'soft_nms', 'batched_soft_nms']
