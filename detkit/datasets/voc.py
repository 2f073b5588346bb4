"""Pascal VOC (2007 / 2012 layout, or any dataset written in that layout)."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Callable, Sequence

import numpy as np

from detkit.registry import DATASETS

from .base import (BAD_ANNOTATION, BAD_BOX, BAD_IMAGE, UNKNOWN_CLASS, BaseDetDataset, read_image_size,
                   sanitize_boxes)
from .transforms import ImageLoadError

__all__ = ['VOCDataset', 'VOC_CLASSES']

VOC_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
               'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
               'tvmonitor')


class _Malformed(Exception):
    """An XML file that cannot be used; the message says why."""


@DATASETS.register_module()
class VOCDataset(BaseDetDataset):
    """Pascal VOC detection dataset.

    Layout (``sub`` = ``data_prefix['sub_data_root']``, e.g. ``'VOC2007/'``)::

        data_root/sub/ImageSets/Main/<split>.txt   one image id per line (= ann_file)
        data_root/sub/Annotations/<id>.xml
        data_root/sub/JPEGImages/<id>.jpg

    Coordinates: VOC XML stores 1-based inclusive pixel indices (``xmin = 1`` is the first column,
    ``xmax = W`` the last). detkit boxes are continuous pixel coordinates without +1, where the whole image is
    ``(0, 0, W, H)``, so a VOC box is read as ``(xmin - 1, ymin - 1, xmax, ymax)``: widths are
    ``xmax - xmin + 1`` exactly as the VOC devkit counts them, and IoU without +1 on these boxes equals the
    devkit's IoU with +1 on the raw ones. (mmdetection 3.x subtracts 1 from all four, keeping its old
    "inclusive" convention and evaluating with ``use_legacy_coordinate=True``; detectron2 does as detkit.)
    Coordinates are kept as floats (mmdetection truncates them to ints).

    ``difficult`` objects go to the ignore set (``bboxes_ignore``/``labels_ignore``) and are ignored by
    :class:`~detkit.evaluation.VOCMetric`.

    Args:
        data_root: the VOCdevkit folder.
        ann_file: the image-id list, relative to ``data_root``.
        data_prefix: ``dict(sub_data_root='VOC2007/')``: the year folder holding Annotations/JPEGImages.
        pipeline: transforms.
        classes: class names; defaults to the 20 VOC classes. A subset of them trains on those classes only
            (other VOC classes are dropped silently); a custom list defines the dataset's classes.
        filter_empty_gt: drop images without boxes (training only).
        test_mode: evaluation dataset.
        skip_unknown_classes: an object whose name is neither in ``classes`` nor (for a subset) a VOC class is
            a ``ValueError`` naming the class and the file; ``True`` skips such objects with a warning instead.
        img_subdir: image folder name.
        ann_subdir: annotation folder name.
        img_suffix: image file extension (the file is ``<id><img_suffix>``).
        **kwargs: ``max_refetch`` of :class:`~detkit.datasets.base.BaseDetDataset`.
    """

    METAINFO = dict(classes=VOC_CLASSES)

    def __init__(self, data_root: str = '', ann_file: str = '', data_prefix: dict[str, str] | None = None,
                 pipeline: Sequence[dict | Callable] = (), classes: Sequence[str] | None = None,
                 filter_empty_gt: bool = True, test_mode: bool = False, skip_unknown_classes: bool = False,
                 img_subdir: str = 'JPEGImages', ann_subdir: str = 'Annotations', img_suffix: str = '.jpg',
                 **kwargs) -> None:
        self.skip_unknown_classes = skip_unknown_classes
        self.img_subdir = img_subdir
        self.ann_subdir = ann_subdir
        self.img_suffix = img_suffix
        super().__init__(data_root=data_root, ann_file=ann_file,
                         data_prefix=data_prefix if data_prefix is not None else dict(sub_data_root=''),
                         pipeline=pipeline, classes=classes, filter_empty_gt=filter_empty_gt, test_mode=test_mode,
                         **kwargs)

    def load_data_list(self) -> list[dict]:
        classes = tuple(self._metainfo['classes'])
        if not classes:
            raise ValueError('VOCDataset: classes is empty')
        self.cat2label = {name: i for i, name in enumerate(classes)}
        # names that are known but not trained on: the rest of VOC when training on a subset of it
        self._known_others = set(VOC_CLASSES) - set(classes) if set(classes) <= set(VOC_CLASSES) else set()
        if not os.path.isfile(self.ann_file):
            raise FileNotFoundError(f'VOCDataset: ann_file (image-id list) not found: {self.ann_file}')
        sub_root = self._prefix('sub_data_root')
        # utf-8-sig: a byte-order mark (Windows editors write one) would otherwise become part of the first id
        with open(self.ann_file, encoding='utf-8-sig') as f:
            # ImageSets/Main/<class>_<split>.txt files hold "id flag" pairs: the id is the first token
            img_ids = [line.split()[0] for line in f if line.strip()]
        data_list = []
        for img_id in img_ids:
            xml_path = os.path.join(sub_root, self.ann_subdir, f'{img_id}.xml')
            img_path = os.path.join(sub_root, self.img_subdir, f'{img_id}{self.img_suffix}')
            try:
                info = self._parse_xml(img_id, xml_path, img_path)
            except _Malformed as err:
                self.report(BAD_ANNOTATION, xml_path, str(err))
                continue
            except ImageLoadError as err:
                self.report(BAD_IMAGE, err.path, f'{err.reason} (the XML has no usable <size>)')
                continue
            data_list.append(info)
        return data_list

    def _parse_xml(self, img_id: str, xml_path: str, img_path: str) -> dict:
        if not os.path.isfile(xml_path):
            raise _Malformed('annotation file not found')
        try:
            root = ET.parse(xml_path).getroot()
        except ET.ParseError as err:
            raise _Malformed(f'XML parse error: {err}') from None
        width = height = None
        size = root.find('size')
        if size is not None:
            try:
                width, height = int(float(size.findtext('width'))), int(float(size.findtext('height')))
            except (TypeError, ValueError):
                width = height = None
        if not width or not height:
            width, height = read_image_size(img_path)

        boxes, labels, difficult = [], [], []
        unknown = []
        for i, obj in enumerate(root.findall('object')):
            name = (obj.findtext('name') or '').strip()
            bnd = obj.find('bndbox')
            if not name or bnd is None:
                raise _Malformed(f'object {i} has no <name> or no <bndbox>')
            try:
                xmin, ymin, xmax, ymax = (float(bnd.findtext(k)) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
            except (TypeError, ValueError):
                raise _Malformed(f'object {i} ({name}) has a missing or non-numeric <bndbox> coordinate') from None
            if name not in self.cat2label:
                if name in self._known_others:
                    continue
                if not self.skip_unknown_classes:
                    raise ValueError(f'VOCDataset: unknown class {name!r} in {xml_path} (classes: '
                                     f'{tuple(self.cat2label)}); pass skip_unknown_classes=True to skip such '
                                     'objects')
                unknown.append(name)
                continue
            flag = (obj.findtext('difficult') or '0').strip()
            difficult.append(flag not in ('0', ''))
            # 1-based inclusive VOC indices -> continuous pixel coordinates (see the class docstring)
            boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))
            labels.append(self.cat2label[name])
        if unknown:
            self.report(UNKNOWN_CLASS, xml_path, f'skipped objects of unknown classes {sorted(set(unknown))}')

        boxes_arr = np.asarray(boxes, np.float32).reshape(-1, 4)
        labels_arr = np.asarray(labels, np.int64)
        difficult_arr = np.asarray(difficult, bool)
        boxes_arr, keep, problems = sanitize_boxes(boxes_arr, width, height)
        if problems:
            self.report(BAD_BOX, xml_path, '; '.join(problems))
        labels_arr, difficult_arr = labels_arr[keep], difficult_arr[keep]
        ann = dict(bboxes=boxes_arr[~difficult_arr], labels=labels_arr[~difficult_arr],
                   bboxes_ignore=boxes_arr[difficult_arr], labels_ignore=labels_arr[difficult_arr])
        return dict(img_id=img_id, img_path=img_path, width=width, height=height, ann=ann)
