"""MS-COCO style detection datasets (one JSON file, read with pycocotools)."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from typing import Callable, Sequence

import numpy as np
from pycocotools.coco import COCO

from detkit.registry import DATASETS

from .base import BAD_ANNOTATION, BAD_BOX, ORPHAN_ANNOTATION, UNKNOWN_CLASS, BaseDetDataset, sanitize_boxes

__all__ = ['CocoDataset', 'load_coco_json']


def load_coco_json(path: str) -> COCO:
    """Read a COCO annotation file into a pycocotools ``COCO`` object, with errors that name the file.

    Annotations that lack ``image_id``, ``category_id`` or a 4-number ``bbox`` are removed before indexing
    (pycocotools would fail on them); they are returned in ``coco.malformed`` as ``(image_id, reason)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: naming the file, when it is not JSON, lacks the ``images`` / ``categories`` lists, or gives
            one id to two images or two categories (annotations refer to both by id, so they would be merged).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'COCO annotation file not found: {path}')
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f'{path}: not valid JSON ({err})') from None
    if not isinstance(data, dict) or not isinstance(data.get('images'), list) \
            or not isinstance(data.get('categories'), list):
        raise ValueError(f'{path}: a COCO file needs "images" and "categories" lists')
    _check_unique_ids(path, data['images'], 'image id', 'entries', 'file_name')
    _check_unique_ids(path, data['categories'], 'category id', 'categories', 'name')
    good, malformed = [], []
    for i, ann in enumerate(data.get('annotations') or []):
        bbox = ann.get('bbox') if isinstance(ann, dict) else None
        if not isinstance(ann, dict) or 'image_id' not in ann or 'category_id' not in ann:
            malformed.append((ann.get('image_id') if isinstance(ann, dict) else None,
                              f'annotation {i} lacks image_id or category_id'))
        elif not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            malformed.append((ann['image_id'], f'annotation {ann.get("id", i)} has a malformed bbox {bbox!r}'))
        else:
            good.append(ann)
    data['annotations'] = good
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
        coco.createIndex()
    coco.malformed = malformed
    return coco


def _check_unique_ids(path: str, entries: list, what: str, plural: str, name_key: str) -> None:
    """Raise ``ValueError`` naming the file and the first id that two ``entries`` share.

    pycocotools indexes images and categories by id, so a repeated id silently merges two entries: the second
    image would load the first one's boxes, or every box of one category would take the other's name.
    """
    names: dict = {}
    for entry in entries:
        if isinstance(entry, dict) and entry.get('id') is not None:
            names.setdefault(entry['id'], []).append(entry.get(name_key))
    repeated = {k: v for k, v in names.items() if len(v) > 1}
    if repeated:
        first, first_names = next(iter(repeated.items()))
        more = f' ({len(repeated) - 1} more ids repeat)' if len(repeated) > 1 else ''
        raise ValueError(f'{path}: {what} {first!r} is used by {len(first_names)} {plural} {tuple(first_names)}'
                         f'{more}; annotations refer to them by id, so they cannot be told apart: give each its '
                         'own id')


@DATASETS.register_module()
class CocoDataset(BaseDetDataset):
    """COCO-format detection dataset.

    Category ids in the file need not be contiguous (COCO's run 1..90 with gaps): labels are ``0..C-1`` in the
    order of ``classes`` (by default all categories sorted by id); ``cat_ids[label]`` / ``label2cat`` give the
    file's category id back and ``cat2label`` maps forward. ``metainfo`` carries ``classes`` and ``cat_ids``.

    Boxes are read from ``bbox = [x, y, w, h]`` (original-image pixels) as ``(x, y, x + w, y + h)``.
    ``iscrowd`` annotations become ignore regions (``bboxes_ignore``); annotations with ``ignore: 1`` are
    skipped (as in mmdetection). Boxes outside the image are clipped and degenerate ones dropped, with one
    warning line per image. Images without boxes are dropped from training only (``filter_empty_gt`` and not
    ``test_mode``). Images keep the JSON file's order.

    Args:
        data_root: dataset folder.
        ann_file: the JSON file, relative to ``data_root``.
        data_prefix: ``dict(img='train2017/')``: image folder relative to ``data_root``.
        pipeline: transforms.
        classes: category names to train on (a subset trains on those; order defines the labels); ``None``
            uses every category in the file.
        filter_empty_gt: drop images without (non-crowd) boxes, in training only.
        test_mode: evaluation dataset.
        **kwargs: ``max_refetch`` of :class:`~detkit.datasets.base.BaseDetDataset`.

    Problems in the file: an annotation whose ``image_id`` is not in ``images`` or whose ``category_id`` is not in
    ``categories`` is skipped, with one warning line per file and a count in ``bad_items``; an image whose
    ``width``/``height`` is not a positive whole number is skipped the same way (a number written as a string,
    ``"320"``, is read as the number).

    Raises:
        ValueError: naming the file, when a name in ``classes`` is not a category of the file, category names
            repeat, ``categories`` is empty, or two images or two categories share an id.
    """

    METAINFO = dict(classes=())

    def __init__(self, data_root: str = '', ann_file: str = '', data_prefix: dict[str, str] | None = None,
                 pipeline: Sequence[dict | Callable] = (), classes: Sequence[str] | None = None,
                 filter_empty_gt: bool = True, test_mode: bool = False, **kwargs) -> None:
        super().__init__(data_root=data_root, ann_file=ann_file,
                         data_prefix=data_prefix if data_prefix is not None else dict(img=''), pipeline=pipeline,
                         classes=classes, filter_empty_gt=filter_empty_gt, test_mode=test_mode, **kwargs)

    def load_data_list(self) -> list[dict]:
        # the COCO object is not kept: data-loader workers would each inherit (and slowly copy) its dicts
        coco = load_coco_json(self.ann_file)
        if not coco.dataset['categories']:
            raise ValueError(f'CocoDataset: {self.ann_file}: the "categories" list is empty, so the dataset would '
                             'have no classes')
        cats = sorted(coco.dataset['categories'], key=lambda c: c['id'])
        by_name: dict[str, int] = {}
        for cat in cats:
            if cat['name'] in by_name:
                raise ValueError(f'{self.ann_file}: category name {cat["name"]!r} is used by ids '
                                 f'{by_name[cat["name"]]} and {cat["id"]}')
            by_name[cat['name']] = cat['id']
        if self._classes_arg is None:
            classes = tuple(c['name'] for c in cats)
        else:
            classes = self._classes_arg
            missing = [c for c in classes if c not in by_name]
            if missing:
                raise ValueError(f'CocoDataset: classes {missing} are not categories of {self.ann_file} '
                                 f'(it has {tuple(by_name)})')
        self.cat_ids = [by_name[c] for c in classes]
        self.cat2label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        self.label2cat = dict(enumerate(self.cat_ids))
        self._metainfo.update(classes=classes, cat_ids=tuple(self.cat_ids))

        malformed_by_img: dict = {}
        for img_id, reason in coco.malformed:
            malformed_by_img.setdefault(img_id, []).append(reason)
        self._report_unmatched_annotations(coco)
        file_cat_ids = {c['id'] for c in cats}
        img_root = self._prefix('img')
        data_list = []
        for img in coco.dataset['images']:
            img_id = img.get('id')
            file_name = img.get('file_name')
            if img_id is None or not file_name:
                self.report(BAD_ANNOTATION, self.ann_file, f'image entry {img!r:.80} lacks id or file_name')
                continue
            img_path = os.path.join(img_root, file_name)
            if img_id in malformed_by_img:
                self.report(BAD_ANNOTATION, f'{self.ann_file} [{file_name}]',
                            '; '.join(malformed_by_img[img_id]) + ' (image skipped)')
                continue
            try:
                width, height = _image_size(img, 'width'), _image_size(img, 'height')
            except ValueError as err:
                self.report(BAD_ANNOTATION, f'{self.ann_file} [{file_name}]', f'{err} (image skipped)')
                continue
            boxes, labels, crowd = [], [], []
            for ann in coco.imgToAnns.get(img_id, []):
                # categories outside `classes` are dropped on purpose; ids the file does not define were
                # reported (and counted) by _report_unmatched_annotations
                if ann.get('ignore', False) or ann['category_id'] not in self.cat2label:
                    continue
                x, y, w, h = ann['bbox']
                boxes.append((x, y, x + w, y + h))
                labels.append(self.cat2label[ann['category_id']])
                crowd.append(bool(ann.get('iscrowd', 0)))
            boxes_arr, keep, problems = sanitize_boxes(np.asarray(boxes, np.float32), width, height)
            if problems:
                self.report(BAD_BOX, f'{self.ann_file} [{file_name}]', '; '.join(problems))
            labels_arr = np.asarray(labels, np.int64)[keep]
            crowd_arr = np.asarray(crowd, bool)[keep]
            ann_info = dict(bboxes=boxes_arr[~crowd_arr], labels=labels_arr[~crowd_arr],
                            bboxes_ignore=boxes_arr[crowd_arr], labels_ignore=labels_arr[crowd_arr])
            data_list.append(dict(img_id=img_id, img_path=img_path, width=width, height=height, ann=ann_info))
        return data_list

    def _report_unmatched_annotations(self, coco: COCO) -> None:
        """One warning line (and a count) for the annotations whose image or category the file does not define."""
        img_ids = {img.get('id') for img in coco.dataset['images']}
        cat_ids = {c['id'] for c in coco.dataset['categories']}
        anns = coco.dataset['annotations']
        orphans = sorted({a['image_id'] for a in anns if a['image_id'] not in img_ids}, key=repr)
        n_orphans = sum(a['image_id'] not in img_ids for a in anns)
        if n_orphans:
            self.report(ORPHAN_ANNOTATION, self.ann_file,
                        f'{n_orphans} annotation(s) refer to image ids that "images" does not list '
                        f'({_some(orphans)}); skipped', count=n_orphans)
        unknown = [a for a in anns if a['image_id'] in img_ids and a['category_id'] not in cat_ids]
        if unknown:
            ids = sorted({a['category_id'] for a in unknown}, key=repr)
            self.report(UNKNOWN_CLASS, self.ann_file,
                        f'{len(unknown)} annotation(s) have category ids that "categories" does not define '
                        f'({_some(ids)}); skipped', count=len(unknown))


def _some(values: list, limit: int = 10) -> str:
    """``[1, 2, 3]`` or ``[1, 2, ...] and 8 more`` for a warning line."""
    shown = ', '.join(repr(v) for v in values[:limit])
    return f'[{shown}]' if len(values) <= limit else f'[{shown}, ...] and {len(values) - limit} more'


def _image_size(img: dict, field: str) -> int | None:
    """``img[field]`` (``'width'`` or ``'height'``) as a positive int; ``None`` when absent.

    A number written as a string (``"320"``) is read as that number, as other COCO readers do.

    Raises:
        ValueError: naming the field and its value when it is not a positive whole number.
    """
    value = img.get(field)
    if value is None:
        return None
    try:
        number = float(value) if not isinstance(value, bool) else float('nan')
    except (TypeError, ValueError):
        number = float('nan')
    if not (math.isfinite(number) and number > 0 and number.is_integer()):
        raise ValueError(f'{field} {value!r} is not a positive whole number of pixels')
    return int(number)
