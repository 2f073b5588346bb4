"""``BaseDetDataset``: what every detkit detection dataset shares.

A subclass only parses its annotation format in :meth:`BaseDetDataset.load_data_list`, returning one dict per
image::

    dict(img_id=..., img_path='/abs/or/relative/file.jpg', width=w or None, height=h or None,
         ann=dict(bboxes=(m, 4) float32, labels=(m,) int64, bboxes_ignore=(k, 4) float32, labels_ignore=(k,) int64))

with boxes in **original-image** pixels (``x1, y1, x2, y2``, no +1) and labels ``0 .. C-1`` indexing
``metainfo['classes']``. The base class filters images without boxes (training only), serialises the list (so
data-loader workers do not copy it page by page through reference counting), runs the pipeline and handles
bad data:

* problems found while parsing (malformed XML/JSON entry/TXT line, box outside the image, with ``x2 <= x1`` or
  under 1 px wide or high, unreadable image header) skip or repair the item with ONE warning line naming the file
  and the reason, and are counted in :attr:`BaseDetDataset.bad_items`;
* an image that fails to decode in ``__getitem__`` is warned about once, flagged (in shared memory, so the
  count is right with data-loader workers) and, in training, replaced by the next valid item; in
  ``test_mode`` a black placeholder image of the annotated size keeps the item so evaluation stays aligned
  (its ground truth then counts as missed).

:meth:`BaseDetDataset.summary` returns a one-line report the engine prints at the end of an epoch.
"""
from __future__ import annotations

import collections
import collections.abc
import difflib
import logging
import os
import pickle
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .transforms import Compose, ImageLoadError, LoadImageFromFile
from .transforms.loading import check_backend_args
from detkit.utils.errors import ConfigError, ConfigTypeError


__all__ = ['BaseDetDataset', 'empty_ann', 'sanitize_boxes', 'read_image_size', 'BAD_ANNOTATION', 'BAD_IMAGE', 'BAD_BOX',
           'UNKNOWN_CLASS', 'ORPHAN_ANNOTATION']

logger = logging.getLogger('detkit.datasets')

#: bad-item reasons, the keys of ``dataset.bad_items``
BAD_ANNOTATION = 'malformed annotation (item skipped)'
BAD_IMAGE = 'unreadable image (item skipped or replaced)'
BAD_BOX = 'invalid box (item repaired)'
UNKNOWN_CLASS = 'unknown class (objects skipped)'
ORPHAN_ANNOTATION = 'annotation of an image the file does not list (skipped)'

#: the smallest width and height (pixels of the original image) that an annotated box keeps
MIN_BOX_SIZE = 1.0

#: warning lines printed per dataset and reason before the rest are only counted
MAX_WARNINGS_PER_REASON = 20


def empty_ann() -> dict[str, np.ndarray]:
    """Annotations of an image without objects."""
    return dict(bboxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64),
                bboxes_ignore=np.zeros((0, 4), np.float32), labels_ignore=np.zeros(0, np.int64))


def sanitize_boxes(boxes: np.ndarray, width: int | None, height: int | None) -> tuple[np.ndarray, np.ndarray,
                                                                                         list[str]]:
    """Repair boxes read from an annotation file (COCO, VOC and TXT all come through here).

    Boxes with non-finite values or ``x2 <= x1`` / ``y2 <= y1`` are dropped, and so are sub-pixel boxes, under
    ``MIN_BOX_SIZE`` (1 px) wide or high: transforms would round them to 0 px, which no loss can learn from.
    Boxes reaching outside a known ``width x height`` image are clipped to it and dropped when less than 1 px is
    left.

    Args:
        boxes: ``(n, 4)`` float32 boxes in original-image pixels.
        width: image width, or ``None`` when unknown (no clipping).
        height: image height, or ``None``.

    Returns:
        ``(boxes, keep, problems)``: the kept (clipped) boxes, the ``(n,)`` bool mask of kept input boxes and
        human-readable descriptions of what was repaired (empty when nothing was).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    problems = []
    finite = np.isfinite(boxes).all(axis=1)
    if not finite.all():
        problems.append(f'{int((~finite).sum())} box(es) with non-finite coordinates dropped')
    inverted = finite & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    if inverted.any():
        problems.append(f'{int(inverted.sum())} box(es) with x2 <= x1 or y2 <= y1 dropped')
    small = finite & ~inverted & ~_at_least_min_size(boxes)
    if small.any():
        problems.append(f'{int(small.sum())} box(es) under {MIN_BOX_SIZE:g} px wide or high dropped')
    keep = finite & ~inverted & ~small
    if width is not None and height is not None and keep.any():
        outside = keep & ((boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > width) | (boxes[:, 3] > height))
        if outside.any():
            np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
            np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
            empty = outside & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
            small = outside & ~empty & ~_at_least_min_size(boxes)
            dropped = [f'{int(empty.sum())} entirely outside'] if empty.any() else []
            dropped += [f'{int(small.sum())} under {MIN_BOX_SIZE:g} px after clipping'] if small.any() else []
            problems.append(f'{int(outside.sum())} box(es) outside the {width}x{height} image clipped'
                            + (f' ({", ".join(dropped)}, dropped)' if dropped else ''))
            keep &= ~empty & ~small
    return boxes[keep], keep, problems


def _at_least_min_size(boxes: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: ``(n, 4)`` boxes at least ``MIN_BOX_SIZE`` wide and high."""
    return ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIZE) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIZE)


def _join(*parts: str | None) -> str:
    parts = [p for p in parts if p]
    return os.path.join(*parts) if parts else ''


class BaseDetDataset(Dataset):
    """Common machinery of the detection datasets (see the module docstring).

    Args:
        data_root: folder that relative ``ann_file`` and ``data_prefix`` paths start from.
        ann_file: annotation file, relative to ``data_root`` unless absolute.
        data_prefix: image folders, e.g. ``dict(img='train2017/')``; relative to ``data_root``.
        pipeline: transform configs or callables run by ``__getitem__`` (see :mod:`detkit.datasets.transforms`).
        classes: class names to train on; ``None`` means the dataset's default class list. Labels index this
            tuple; boxes of other classes are dropped.
        filter_empty_gt: drop images without (non-ignored) boxes, in training only (never in ``test_mode``).
        test_mode: evaluation dataset: no filtering, unreadable images become placeholders instead of being
            replaced by other items.
        max_refetch: how many consecutive unreadable images ``__getitem__`` skips before it raises.
        metainfo: mmdetection 3.x's spelling: ``dict(classes=(...))`` is ``classes=(...)`` (both may be given
            when they are equal); a ``palette`` (one colour per class) is kept in :attr:`metainfo` (and so in a
            checkpoint's ``dataset_meta``) but detkit's drawing does not use it. Other keys are refused.
        backend_args: mmdetection 3.x's file-backend settings. ``None`` (local files, what every mmdetection 3.x
            config carries) is accepted and means what detkit does; anything else is refused, since detkit reads
            local files only.

    Raises:
        TypeError: ``classes`` is a string, or ``metainfo`` is not a dict.
        ValueError: duplicate classes, no classes at all, ``classes`` and ``metainfo['classes']`` differ, a
            ``metainfo`` key other than ``classes``/``palette``, or ``backend_args`` other than ``None``.
    """

    #: default metainfo; subclasses set ``classes``
    METAINFO: dict[str, Any] = dict(classes=())
    #: the keys of the ``metainfo`` argument that the constructor accepts
    METAINFO_KEYS = ('classes', 'palette')

    def __init__(self, data_root: str = '', ann_file: str = '', data_prefix: dict[str, str] | None = None,
                 pipeline: Sequence[dict | Callable] = (), classes: Sequence[str] | None = None,
                 filter_empty_gt: bool = True, test_mode: bool = False, max_refetch: int = 50,
                 metainfo: dict[str, Any] | None = None, backend_args: dict[str, Any] | None = None) -> None:
        name = type(self).__name__
        check_backend_args(backend_args, name)
        metainfo = self._check_metainfo(metainfo)
        if 'classes' in metainfo:
            if classes is not None and not isinstance(classes, str) and tuple(classes) != metainfo['classes']:
                raise ValueError(f"{name}: classes={tuple(classes)!r} and metainfo['classes']="
                                 f"{metainfo['classes']!r} differ: give one of them")
            classes = metainfo.pop('classes')
        self.data_root = os.fspath(data_root) if data_root else ''
        self.ann_file = self._abspath(ann_file)
        self.data_prefix = dict(data_prefix or {})
        self.filter_empty_gt = filter_empty_gt
        self.test_mode = test_mode
        self.max_refetch = max_refetch
        if isinstance(classes, str):
            raise TypeError(f'{type(self).__name__}: classes must be a sequence of names, got the string '
                            f'{classes!r} (write classes=({classes!r},))')
        self._classes_arg = tuple(classes) if classes is not None else None
        if self._classes_arg is not None and len(set(self._classes_arg)) != len(self._classes_arg):
            raise ValueError(f'{type(self).__name__}: classes has duplicates: {self._classes_arg}')
        self._metainfo: dict[str, Any] = {**self.METAINFO, **metainfo}
        if self._classes_arg is not None:
            self._metainfo['classes'] = self._classes_arg
        self._load_problems: collections.Counter[str] = collections.Counter()
        self._warned: collections.Counter[str] = collections.Counter()
        self.pipeline = Compose(pipeline)

        data_list = self.load_data_list()
        self._metainfo['classes'] = tuple(self._metainfo['classes'])
        if not self._metainfo['classes']:  # training would find no batches and evaluation would blame the metric
            raise ValueError(f'{type(self).__name__} ({self.ann_file or self.data_root}): the dataset defines no '
                             'classes')
        if filter_empty_gt and not test_mode:
            data_list = [info for info in data_list if len(info['ann']['bboxes']) > 0]
        self._serialize(data_list)
        # one flag per item, in shared memory so that data-loader workers report unreadable images to the
        # dataset object the engine holds (fork and spawn both keep the storage shared)
        self._bad_flags = torch.zeros(len(data_list), dtype=torch.uint8).share_memory_()

    def _check_metainfo(self, metainfo: dict[str, Any] | None) -> dict[str, Any]:
        """A copy of the ``metainfo`` argument (``classes`` as a tuple), refusing keys nothing reads."""
        name = type(self).__name__
        if metainfo is None:
            return {}
        if not isinstance(metainfo, collections.abc.Mapping):
            raise ConfigTypeError(f'{name}: metainfo must be a dict such as dict(classes=(...)), got {metainfo!r}')
        for key in metainfo:
            if key not in self.METAINFO_KEYS:
                close = difflib.get_close_matches(str(key), self.METAINFO_KEYS, n=1, cutoff=0.6)
                hint = f'; did you mean {close[0]!r}?' if close else ''
                raise ConfigError(f'{name}: metainfo key {key!r} is not read by detkit{hint} (metainfo keys: '
                                 f'{", ".join(self.METAINFO_KEYS)})')
        out = dict(metainfo)
        if 'classes' in out and out['classes'] is not None and not isinstance(out['classes'], str):
            out['classes'] = tuple(out['classes'])
        return out

    # ------------------------------------------------------------------ to implement
    def load_data_list(self) -> list[dict]:
        """Parse the annotation file into the per-image dicts described in the module docstring."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for subclasses
    def _abspath(self, path: str | None) -> str:
        if not path:
            return ''
        path = os.fspath(path)
        return path if os.path.isabs(path) or not self.data_root else os.path.join(self.data_root, path)

    def _prefix(self, key: str) -> str:
        return _join(self.data_root, self.data_prefix.get(key, ''))

    def report(self, reason: str, path: str, detail: str, count: int = 1) -> None:
        """Count ``count`` bad items and log ONE warning line naming the file and the reason."""
        self._load_problems[reason] += count
        self._warn(reason, f'{type(self).__name__}: {path}: {detail}')

    def _warn(self, reason: str, message: str) -> None:
        self._warned[reason] += 1
        n = self._warned[reason]
        if n <= MAX_WARNINGS_PER_REASON:
            logger.warning(message)
        if n == MAX_WARNINGS_PER_REASON:
            logger.warning(f'{type(self).__name__}: further "{reason}" warnings are only counted; '
                           'see dataset.summary()')

    # ------------------------------------------------------------------ storage
    def _serialize(self, data_list: list[dict]) -> None:
        # one pickled byte buffer plus end offsets instead of a list of dicts: reading an item in a forked
        # worker then touches no Python object refcounts, so the parent's pages are not copied
        blobs = [np.frombuffer(pickle.dumps(info, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8)
                 for info in data_list]
        self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._blob = np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)

    def get_data_info(self, idx: int) -> dict:
        """The parsed dict of item ``idx`` (a fresh copy; original-image pixels)."""
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f'{type(self).__name__}: index {idx} out of range for {n} items')
        idx %= n
        start = int(self._ends[idx - 1]) if idx > 0 else 0
        return pickle.loads(self._blob[start:int(self._ends[idx])].tobytes())

    # ------------------------------------------------------------------ public API
    @property
    def metainfo(self) -> dict[str, Any]:
        """``dict(classes=(...), ...)``; a copy."""
        return dict(self._metainfo)

    def __len__(self) -> int:
        return len(self._ends)

    def get_ann_info(self, idx: int) -> dict[str, np.ndarray]:
        """Annotations of item ``idx`` in **original-image** pixels.

        Returns:
            ``dict(bboxes=(m, 4) float32, labels=(m,) int64, bboxes_ignore=(k, 4) float32,
            labels_ignore=(k,) int64)``.
        """
        return self.get_data_info(idx)['ann']

    def get_cat_ids(self, idx: int) -> list[int]:
        """Labels present in item ``idx`` (for class-aware samplers)."""
        return self.get_ann_info(idx)['labels'].tolist()

    @property
    def bad_items(self) -> collections.Counter[str]:
        """Bad items so far, by reason: parse-time problems plus images that failed to decode."""
        counts = collections.Counter(self._load_problems)
        runtime = int(self._bad_flags.sum())
        if runtime:
            counts[BAD_IMAGE] += runtime
        return counts

    def summary(self) -> str:
        """One line: how many items this dataset has and which bad items it skipped or repaired."""
        counts = self.bad_items
        where = self.ann_file or self.data_root or '<no file>'
        if not counts:
            return f'{type(self).__name__} ({where}): {len(self)} items, no bad items'
        detail = ', '.join(f'{n} {reason}' for reason, n in sorted(counts.items()))
        return f'{type(self).__name__} ({where}): {len(self)} items, {sum(counts.values())} bad: {detail}'

    def prepare_results(self, idx: int) -> dict[str, Any]:
        """The ``results`` dict the pipeline starts from for item ``idx``."""
        info = self.get_data_info(idx)
        return dict(img_id=info['img_id'], img_path=info['img_path'], sample_idx=idx, ann_info=info['ann'],
                    width=info.get('width'), height=info.get('height'))

    def __getitem__(self, idx: int) -> dict[str, Any]:
        """Run the pipeline on item ``idx``; returns the PackDetInputs data sample (input-image pixels)."""
        n = len(self)
        if n == 0:
            raise IndexError(f'{type(self).__name__} ({self.ann_file}) is empty')
        idx = int(idx) % n
        for _ in range(self.max_refetch + 1):
            if not self._bad_flags[idx]:
                try:
                    out = self.pipeline(self.prepare_results(idx))
                except ImageLoadError as err:
                    self._flag_unreadable(idx, err)
                    out = None
                if out is not None:
                    return out
            if self.test_mode:
                return self._placeholder(idx)
            idx = (idx + 1) % n
        raise RuntimeError(f'{type(self).__name__} ({self.ann_file}): {self.max_refetch} consecutive items could '
                           f'not be loaded; last tried item {idx}. {self.summary()}')

    def _flag_unreadable(self, idx: int, err: ImageLoadError) -> None:
        self._bad_flags[idx] = 1
        self._warn(BAD_IMAGE, f'{type(self).__name__}: {err.path}: {err.reason}; '
                   + ('a black placeholder is evaluated instead' if self.test_mode else
                      'using another item instead'))

    def _placeholder(self, idx: int) -> dict[str, Any]:
        """Run the pipeline on a black image of the annotated size instead of the unreadable file."""
        results = self.prepare_results(idx)
        h, w = results.get('height') or 32, results.get('width') or 32
        for t in self.pipeline.transforms:
            if isinstance(t, LoadImageFromFile):
                img = np.zeros((h, w, 3), np.float32 if t.to_float32 else np.uint8)
                results.update(img=img, ori_shape=(h, w), img_shape=(h, w))
                continue
            results = t(results)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(ann_file={self.ann_file!r}, items={len(self)}, '
                f'classes={len(self._metainfo["classes"])}, test_mode={self.test_mode})')


def read_image_size(path: str) -> tuple[int, int]:
    """``(width, height)`` of an image file as it is decoded (EXIF orientation applied), from its header only.

    Raises:
        ImageLoadError: naming the file when it is missing or not an image.
    """
    from PIL import Image  # only needed for formats that do not store the image size

    if not os.path.isfile(path):
        raise ImageLoadError(path, 'file not found')
    try:
        with Image.open(path) as im:
            w, h = im.size
            # orientations 5..8 rotate by 90 degrees: the decoded image (cv2 applies EXIF) is transposed
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
    except Exception as err:  # PIL raises several types for broken files
        raise ImageLoadError(path, f'not a readable image ({type(err).__name__}: {err})') from None
    return w, h
