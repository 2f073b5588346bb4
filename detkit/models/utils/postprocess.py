"""Post-processing settings (a detector's ``test_cfg``) and the class-aware NMS step that reads them."""
from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor

from detkit.ops import batched_nms, batched_soft_nms
from detkit.utils.errors import ConfigError

__all__ = ['NMSConfig', 'TestConfig', 'multiclass_nms', 'top_k_per_class']

_NMS_KEYS = {'nms': ('type', 'iou_threshold'),
             'soft_nms': ('type', 'iou_threshold', 'method', 'sigma', 'min_score')}
_SOFT_METHODS = ('linear', 'gaussian')


def _closest(name: str, valid: tuple[str, ...] | list[str]) -> str:
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ''


def _check_int(where: str, value: Any, meaning: str) -> None:
    """``value`` must be an int (``bool`` is not one); ``meaning`` says what ``<= 0`` does."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f'{where} must be an int ({meaning}), got {value!r}')


def _check_real(where: str, value: Any, low: float | None = None, high: float | None = None,
                high_open: bool = False) -> None:
    """``value`` must be a finite real number (not ``bool``) in ``[low, high]`` (``[low, high)`` if ``high_open``);
    a bound left ``None`` is not checked."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok and low is not None:
        ok = value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if low is None and high is None:
            kind = 'a finite number'
        elif high is None:
            kind = f'>= {low}'
        else:
            kind = f"in [{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f'{where} must be {kind}, got {value!r}')


@dataclass(frozen=True)
class NMSConfig:
    """``test_cfg.nms``: class-aware hard NMS or soft-NMS.

    * ``dict(type='nms', iou_threshold=0.5)``: a box is removed by a higher-scoring box of its class whose IoU
      with it is above ``iou_threshold``.
    * ``dict(type='soft_nms', method='linear'|'gaussian', sigma=0.5, iou_threshold=0.3, min_score=1e-3)``: scores
      decay instead (Bodla et al. 2017; see :func:`detkit.ops.batched_soft_nms`); detections keep their decayed
      scores, and those below ``min_score`` go.

    ``iou_threshold`` is in ``[0, 1]``, ``min_score`` in ``[0, 1)``, ``sigma`` finite; every instance is checked
    when made (:meth:`check`).
    """

    type: str = 'nms'
    iou_threshold: float = 0.5
    method: str = 'linear'
    sigma: float = 0.5
    min_score: float = 1e-3

    def __post_init__(self) -> None:
        self.check(self.__dict__)

    @staticmethod
    def check(values: Mapping[str, Any], where: str = 'test_cfg.nms') -> None:
        """Every field's type and range, given all fields by name.

        Raises:
            ValueError: one line naming ``where.<field>`` and the value.
        """
        kind = values['type']
        if kind not in _NMS_KEYS:
            raise ConfigError(f"{where}.type must be 'nms' or 'soft_nms', got {kind!r}"
                             f"{_closest(str(kind), list(_NMS_KEYS))}")
        _check_real(f'{where}.iou_threshold', values['iou_threshold'], 0, 1)
        if kind == 'soft_nms':
            method, sigma = values['method'], values['sigma']
            if method not in _SOFT_METHODS:
                raise ConfigError(f'{where}.method must be one of {_SOFT_METHODS}, got {method!r}')
            _check_real(f'{where}.sigma', sigma)
            if method == 'gaussian' and not sigma > 0:
                raise ConfigError(f'{where}.sigma must be > 0 for the gaussian method, got {sigma!r}')
            _check_real(f'{where}.min_score', values['min_score'], 0, 1, high_open=True)

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any] | NMSConfig, where: str = 'test_cfg.nms') -> NMSConfig:
        """Validate a config dict; errors name ``where`` and the offending key."""
        if isinstance(cfg, NMSConfig):
            return cfg
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"{where} must be a dict such as dict(type='nms', iou_threshold=0.5), got {cfg!r}")
        cfg = dict(cfg)
        kind = cfg.get('type', 'nms')
        if kind not in _NMS_KEYS:
            raise ConfigError(f"{where}.type must be 'nms' or 'soft_nms', got {kind!r}"
                             f"{_closest(str(kind), list(_NMS_KEYS))}")
        unknown = sorted(set(cfg) - set(_NMS_KEYS[kind]))
        if unknown:
            hint = _closest(unknown[0], _NMS_KEYS[kind])
            raise ConfigError(f'{where} has unknown key(s) {unknown}{hint} for type={kind!r}; it may hold '
                             f'{list(_NMS_KEYS[kind])}')
        cls.check({f.name: cfg.get(f.name, f.default) for f in fields(cls)}, where)  # __post_init__: test_cfg.nms
        return cls(**cfg)


@dataclass(frozen=True)
class TestConfig:
    """A detector's post-processing (``test_cfg``), in the order it is applied to each image.

    Attributes:
        score_thr: (anchor, class) pairs scoring at most this are dropped first (in ``[0, 1)``).
        nms_pre: the best candidates kept per feature level before NMS (``<= 0``: all).
        nms_pre_per_class: then the best candidates kept per class, over all levels (``<= 0``: all; torchvision's
            SSD keeps 400, with ``nms_pre=0``).
        min_bbox_size: boxes must be wider and taller than this, in pixels of the returned image (negative: keep
            even empty boxes).
        nms: :class:`NMSConfig`.
        max_per_class: detections kept per class after NMS (``<= 0``: all; M2Det keeps 50).
        max_per_img: detections kept per image, the best by (decayed) score (``<= 0``: all).

    The counts are ints, ``min_bbox_size`` a finite number; every instance is checked when made (:meth:`check`).
    """

    __test__ = False  # not a pytest test class, whatever its name

    score_thr: float = 0.05
    nms_pre: int = 1000
    nms_pre_per_class: int = 0
    min_bbox_size: float = 0.0
    nms: NMSConfig = field(default_factory=NMSConfig)
    max_per_class: int = 0
    max_per_img: int = 100

    def __post_init__(self) -> None:
        self.check(self.__dict__)

    @staticmethod
    def check(values: Mapping[str, Any], where: str = 'test_cfg') -> None:
        """Every field's type and range, given all fields by name (``nms`` must be an :class:`NMSConfig`, itself
        checked when made).

        Raises:
            ValueError: one line naming ``where.<field>`` and the value.
        """
        _check_real(f'{where}.score_thr', values['score_thr'], 0, 1, high_open=True)
        for name in ('nms_pre', 'nms_pre_per_class', 'max_per_class', 'max_per_img'):
            _check_int(f'{where}.{name}', values[name], '<= 0: all')
        _check_real(f'{where}.min_bbox_size', values['min_bbox_size'])
        if not isinstance(values['nms'], NMSConfig):
            raise ConfigError(f"{where}.nms must be a dict such as dict(type='nms', iou_threshold=0.5), "
                             f"got {values['nms']!r}")

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any] | TestConfig | None, defaults: TestConfig | Mapping[str, Any],
                 where: str = 'test_cfg') -> TestConfig:
        """``cfg`` over ``defaults`` (the head's published setting): keys left out keep the default.

        Raises:
            ValueError: naming the unknown key and the closest valid one, or a field (``where.<field>``) whose
                type or range is wrong, with its value.
        """
        base = defaults if isinstance(defaults, TestConfig) else cls.from_cfg(defaults, cls(), where)
        if cfg is None:
            return base
        if isinstance(cfg, TestConfig):
            return cfg
        if not isinstance(cfg, Mapping):
            raise ConfigError(f'{where} must be a dict, got {type(cfg).__name__}')
        valid = tuple(f.name for f in fields(cls))
        unknown = sorted(set(cfg) - set(valid))
        if unknown:
            raise ConfigError(f'unknown {where} key(s) {unknown}{_closest(unknown[0], valid)}; {where} may hold '
                             f'{list(valid)}')
        values = dict(cfg)
        if 'nms' in values:
            values['nms'] = NMSConfig.from_cfg(values['nms'], f'{where}.nms')
        cls.check({**base.__dict__, **values}, where)  # under ``where``: __post_init__ names it test_cfg
        return replace(base, **values)


def _rank_within_class(labels: Tensor) -> Tensor:
    """``Tensor[K]`` int64: how many earlier elements share each element's label (0 for the first of a class).

    A stable sort by label keeps the given order inside each class; each element's position in that sort minus the
    position of its class's first element is its rank.
    """
    by_label = torch.sort(labels, stable=True).indices
    sorted_labels = labels[by_label]
    first = torch.searchsorted(sorted_labels, sorted_labels, right=False)
    rank = torch.empty_like(by_label)
    rank[by_label] = torch.arange(len(labels), device=labels.device) - first
    return rank


def top_k_per_class(scores: Tensor, labels: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` best-scoring candidates of every class, class by class (ascending labels), each class
    by descending score: the order in which torchvision's SSD hands its candidates to NMS.

    Args:
        scores: ``Tensor[K]`` candidate scores.
        labels: ``Tensor[K]`` int64 candidate classes.
        k: candidates kept per class (``> 0``).

    Returns:
        ``Tensor[K']`` int64 indices into ``scores``.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(labels[order], stable=True).indices]  # class-major, by score inside a class
    return order[_rank_within_class(labels[order]) < k]


def multiclass_nms(boxes: Tensor, scores: Tensor, labels: Tensor, nms: NMSConfig, max_per_class: int = 0,
                   max_per_img: int = 100) -> tuple[Tensor, Tensor, Tensor]:
    """Class-aware NMS (hard or soft) of one image's candidates, then the per-class and per-image caps.

    Args:
        boxes: ``Tensor[K, 4]`` candidate boxes (any one image's pixels).
        scores: ``Tensor[K]`` their class scores.
        labels: ``Tensor[K]`` int64 classes; boxes only suppress boxes of their own class.
        nms: the NMS setting.
        max_per_class: keep at most this many per class (``<= 0``: all).
        max_per_img: keep at most this many in all (``<= 0``: all).

    Returns:
        ``(boxes, scores, labels)`` of the kept detections, by descending (decayed, for soft-NMS) score.
    """
    if nms.type == 'soft_nms':
        dets, keep = batched_soft_nms(boxes, scores, labels, iou_threshold=nms.iou_threshold, sigma=nms.sigma,
                                      min_score=nms.min_score, method=nms.method)
        scores = dets[:, 4].to(scores.dtype)
    else:
        keep = batched_nms(boxes, scores, labels, nms.iou_threshold)
        scores = scores[keep]
    boxes, labels = boxes[keep], labels[keep]
    if max_per_class > 0 and len(keep):
        # the detections are sorted by score, so a detection's rank within its class counts the better ones
        ok = _rank_within_class(labels) < max_per_class
        boxes, scores, labels = boxes[ok], scores[ok], labels[ok]
    if max_per_img > 0:
        boxes, scores, labels = boxes[:max_per_img], scores[:max_per_img], labels[:max_per_img]
    return boxes, scores, labels
