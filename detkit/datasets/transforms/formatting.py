"""``PackDetInputs``: turn a ``results`` dict into the data sample of docs/conventions.md."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from detkit.registry import TRANSFORMS

__all__ = ['PackDetInputs']

_DEFAULT_META_KEYS = ('img_id', 'img_path', 'sample_idx', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
                      'flip', 'flip_direction')


def _to_tuple(value):
    return tuple(int(v) for v in value) if value is not None else None


@TRANSFORMS.register_module()
class PackDetInputs:
    """Pack the image, boxes and meta data into the detkit data sample.

    Output (boxes in **input-image** pixels, i.e. of the image in ``inputs`` before padding)::

        {'inputs': Tensor[3, H, W] float32, 'gt_bboxes': Tensor[M, 4] float32, 'gt_labels': Tensor[M] int64,
         'gt_bboxes_ignore': Tensor[K, 4] float32, 'meta': {...plain Python values...}}

    A missing box field (e.g. a test pipeline without LoadAnnotations) packs as an empty tensor. Meta defaults
    fill what the pipeline did not record: ``img_shape`` and ``pad_shape`` are the image's shape,
    ``scale_factor`` ``(1.0, 1.0)``, ``flip`` ``False``.

    Args:
        meta_keys: keys copied from ``results`` into ``meta``.
    """

    def __init__(self, meta_keys: Sequence[str] = _DEFAULT_META_KEYS) -> None:
        self.meta_keys = tuple(meta_keys)

    def __call__(self, results: dict) -> dict:
        img = results['img']
        if img.ndim == 2:
            img = img[..., None]
        # one copy into a contiguous channel-first float32 tensor
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))
        h, w = img.shape[:2]
        defaults = dict(img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0), flip=False,
                        flip_direction=None, img_id=None, img_path=None, sample_idx=None)
        meta = {}
        for key in self.meta_keys:
            value = results.get(key, defaults.get(key))
            if key in ('ori_shape', 'img_shape', 'pad_shape'):
                value = _to_tuple(value)
            elif key == 'scale_factor':
                value = (float(value[0]), float(value[1]))
            elif isinstance(value, np.generic):
                value = value.item()
            meta[key] = value
        return {
            'inputs': inputs,
            'gt_bboxes': torch.from_numpy(np.asarray(results.get('gt_bboxes', np.zeros((0, 4))),
                                                     dtype=np.float32).reshape(-1, 4)),
            'gt_labels': torch.from_numpy(np.asarray(results.get('gt_labels', np.zeros(0)),
                                                     dtype=np.int64).reshape(-1)),
            'gt_bboxes_ignore': torch.from_numpy(np.asarray(results.get('gt_bboxes_ignore', np.zeros((0, 4))),
                                                            dtype=np.float32).reshape(-1, 4)),
            'meta': meta,
        }

    def __repr__(self) -> str:
        return f'PackDetInputs(meta_keys={self.meta_keys})'
