"""Own datasets in the one-line-per-image TXT format (MindSpore SSD)."""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from detkit.registry import DATASETS

from .base import BAD_ANNOTATION, BAD_BOX, BAD_IMAGE, UNKNOWN_CLASS, BaseDetDataset, read_image_size, \
    sanitize_boxes
from .transforms import ImageLoadError

__all__ = ['TxtDataset']


class _BadLine(Exception):
    pass


@DATASETS.register_module()
class TxtDataset(BaseDetDataset):
    """Detection dataset from a text file with one image per line::

        relative/path.jpg x1,y1,x2,y2,cls x1,y1,x2,y2,cls ...

    Boxes are in original-image pixels with **x first** (``x1, y1, x2, y2``, no +1), as the MindSpore SSD
    README writes them (its loader's code reads them y first; detkit follows the README). ``cls`` is an index
    into ``classes``. The image path is relative to ``data_root/data_prefix['img']``. Blank lines and lines
    starting with ``#`` are skipped; an image line without boxes is an image without objects.

    The format stores no image size, so sizes are read from the image headers (PIL, EXIF-aware) when the
    dataset is built; an unreadable image is skipped with a warning there.

    Args:
        data_root: dataset folder.
        ann_file: the TXT file, relative to ``data_root``.
        data_prefix: ``dict(img='')``: image folder relative to ``data_root``.
        pipeline: transforms.
        classes: the class names that ``cls`` indexes (required).
        filter_empty_gt: drop images without boxes, in training only.
        test_mode: evaluation dataset.
        skip_unknown_classes: a ``cls`` outside ``0..len(classes)-1`` is a ``ValueError`` naming the file and
            line; ``True`` skips such boxes with a warning instead.
        **kwargs: ``max_refetch`` of :class:`~detkit.datasets.base.BaseDetDataset`.
    """

    METAINFO = dict(classes=())

    def __init__(self, data_root: str = '', ann_file: str = '', data_prefix: dict[str, str] | None = None,
                 pipeline: Sequence[dict | Callable] = (), classes: Sequence[str] | None = None,
                 filter_empty_gt: bool = True, test_mode: bool = False, skip_unknown_classes: bool = False,
                 **kwargs) -> None:
        if not classes and not (isinstance(kwargs.get('metainfo'), dict) and kwargs['metainfo'].get('classes')):
            raise ValueError('TxtDataset: classes=(...) is required: the "cls" field of each box indexes it')
        self.skip_unknown_classes = skip_unknown_classes
        super().__init__(data_root=data_root, ann_file=ann_file,
                         data_prefix=data_prefix if data_prefix is not None else dict(img=''), pipeline=pipeline,
                         classes=classes, filter_empty_gt=filter_empty_gt, test_mode=test_mode, **kwargs)

    def load_data_list(self) -> list[dict]:
        if not os.path.isfile(self.ann_file):
            raise FileNotFoundError(f'TxtDataset: ann_file not found: {self.ann_file}')
        num_classes = len(self._metainfo['classes'])
        img_root = self._prefix('img')
        data_list = []
        # utf-8-sig: a byte-order mark (Windows editors write one) would otherwise become part of the first path
        with open(self.ann_file, encoding='utf-8-sig') as f:
            lines = f.read().splitlines()
        for lineno, line in enumerate(lines, start=1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            where = f'{self.ann_file}:{lineno}'
            tokens = line.split()
            rel_path = tokens[0]
            try:
                boxes, labels = self._parse_boxes(tokens[1:])
            except _BadLine as err:
                self.report(BAD_ANNOTATION, where, f'{err} (line skipped)')
                continue
            unknown = (labels < 0) | (labels >= num_classes)
            if unknown.any():
                if not self.skip_unknown_classes:
                    raise ValueError(f'TxtDataset: {where}: class index {int(labels[unknown][0])} is not in '
                                     f'0..{num_classes - 1} (classes: {self._metainfo["classes"]}); pass '
                                     'skip_unknown_classes=True to skip such boxes')
                self.report(UNKNOWN_CLASS, where, f'skipped {int(unknown.sum())} box(es) with class index outside '
                            f'0..{num_classes - 1}')
                boxes, labels = boxes[~unknown], labels[~unknown]
            img_path = os.path.join(img_root, rel_path)
            try:
                width, height = read_image_size(img_path)
            except ImageLoadError as err:
                self.report(BAD_IMAGE, err.path, f'{err.reason} (referenced at {where}; line skipped)')
                continue
            boxes, keep, problems = sanitize_boxes(boxes, width, height)
            if problems:
                self.report(BAD_BOX, where, f'{rel_path}: ' + '; '.join(problems))
            ann = dict(bboxes=boxes, labels=labels[keep], bboxes_ignore=np.zeros((0, 4), np.float32),
                       labels_ignore=np.zeros(0, np.int64))
            data_list.append(dict(img_id=rel_path, img_path=img_path, width=width, height=height, ann=ann))
        return data_list

    @staticmethod
    def _parse_boxes(tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
        boxes, labels = [], []
        for token in tokens:
            parts = token.split(',')
            if len(parts) != 5:
                raise _BadLine(f'box {token!r} is not "x1,y1,x2,y2,cls"')
            try:
                x1, y1, x2, y2 = (float(v) for v in parts[:4])
                cls = float(parts[4])
            except ValueError:
                raise _BadLine(f'box {token!r} has a non-numeric field') from None
            if not cls.is_integer():
                raise _BadLine(f'box {token!r} has a non-integer class index')
            boxes.append((x1, y1, x2, y2))
            labels.append(int(cls))
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)
