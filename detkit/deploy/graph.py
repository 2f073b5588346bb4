"""The whole detector as one traceable tensor program: uint8 BGR image -> pre-processing -> network -> decoding ->
NMS -> detections, for ``torch.export`` and ONNX.

:meth:`AnchorHead.predict <detkit.models.heads.anchor_head.AnchorHead.predict>` filters candidates into
data-dependent lists image by image; a graph wants fixed shapes. :class:`DetectorGraph` computes the same
detections with masks instead of lists, in the order of ``predict``:

* scores (softmax with the background dropped, or sigmoid) of every (anchor, class) pair; the pairs above
  ``score_thr`` and, per level, among the ``nms_pre`` best are **candidates** (a ``(N, C, A)`` mask over a dense
  score matrix, ``-1`` elsewhere); with ``nms_pre_per_class`` only the best of each class stay;
* every anchor's box, decoded, clipped to the resized image, mapped to the original image and clipped to it;
  boxes not wider and taller than ``min_bbox_size`` lose their candidates;
* hard NMS: ONNX ``NonMaxSuppression`` on ``boxes (N, A, 4)`` and ``scores (N, C, A)``, which is class-aware
  through its class dimension (one NMS per class on the shared anchor boxes, no coordinate offsets) and caps each
  class at ``max_per_class``. In PyTorch the op is :func:`nms_per_class`, i.e. detkit's ``batched_nms``;
  ``torch.onnx.export`` maps it to ``NonMaxSuppression`` (:mod:`detkit.deploy.onnx_export`);
* soft-NMS (no ONNX op exists): ``max_per_class`` rounds of "select the best remaining box of every class, decay
  the scores of its class", vectorised over images and classes, an ONNX ``Scan`` in the graph (see
  :func:`soft_nms_rounds`); it needs ``max_per_class > 0`` (M2Det's 50);
* the ``max_dets`` best detections over all classes, by score.

Boxes are in the input image's pixels. Ties: detections with exactly equal scores may come out in another order
than ``predict``'s (which breaks ties by its candidate list order); everything else is the same computation.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detkit.models.heads.anchor_head import AnchorHead, flatten_levels
from detkit.models.utils.postprocess import TestConfig, _rank_within_class
from detkit.ops import batched_nms

from .preprocess import PreprocessSpec, _shape_tensor, preprocess

__all__ = ['DetectorGraph', 'nms_per_class', 'soft_nms_rounds', 'detection_cap']

_NOT_CANDIDATE = -1.0  # the score of a non-candidate pair; real scores are probabilities >= 0


@torch.library.custom_op('detkit_deploy::nms_per_class', mutates_args=())
def nms_per_class(boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float,
                  score_threshold: float) -> Tensor:
    """ONNX ``NonMaxSuppression`` semantics with detkit's ``batched_nms``: the indices kept by per-class NMS.

    Args:
        boxes: ``Tensor[N, A, 4]`` ``x1, y1, x2, y2`` of every image's boxes, shared by the classes.
        scores: ``Tensor[N, C, A]``; pairs scoring ``<= score_threshold`` take no part.
        max_per_class: at most this many kept per image and class, the best (``<= 0``: all).
        iou_threshold: suppress when IoU ``> iou_threshold``.
        score_threshold: see ``scores``.

    Returns:
        ``Tensor[K, 3]`` int64 rows ``(image, class, box)``.
    """
    rows = []
    for n in range(boxes.shape[0]):
        cls, idx = (scores[n] > score_threshold).nonzero(as_tuple=True)
        keep = batched_nms(boxes[n, idx], scores[n, cls, idx], cls, iou_threshold)  # by descending score
        cls, idx = cls[keep], idx[keep]
        if max_per_class > 0:  # kept by descending score: a rank within the class counts the better ones
            best = _rank_within_class(cls) < max_per_class
            cls, idx = cls[best], idx[best]
        rows.append(torch.stack([torch.full_like(cls, n), cls, idx], dim=1))
    return torch.cat(rows) if rows else boxes.new_zeros((0, 3), dtype=torch.long)


@nms_per_class.register_fake
def _(boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float, score_threshold: float) -> Tensor:
    k = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((k, 3), dtype=torch.long)


def _pair_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of ``a (..., 1, 4)`` with ``b (..., A, 4)``, with torchvision's arithmetic (detkit's kernels')."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = w * h
    return inter / (area_a + area_b - inter)


def soft_nms_rounds(boxes: Tensor, scores: Tensor, rounds: int, iou_threshold: float, sigma: float,
                    min_score: float, method: str) -> tuple[Tensor, Tensor]:
    """The first ``rounds`` selections of class-aware soft-NMS, for every image and class at once.

    Each round selects, in every (image, class), the remaining pair of highest decayed score (ties: the lowest box
    index), then decays the scores of that class by their IoU with the selected box (``linear``: ``s *= 1 - iou``
    when ``iou > iou_threshold``; ``gaussian``: ``s *= exp(-iou**2 / sigma)``) and drops pairs below
    ``min_score``: the rule of :func:`detkit.ops.batched_soft_nms`, whose output within a class is in selection
    order, so that its first ``rounds`` detections per class are these (``max_per_class = rounds``).

    Eager, the rounds are a Python loop; under ``torch.export`` the same round is one ``scan`` (an ONNX ``Scan``):
    ``rounds`` unrolled copies would grow the graph with ``rounds`` (M2Det's 50 rounds: ~1,500 nodes).

    Args:
        boxes: ``Tensor[N, A, 4]``.
        scores: ``Tensor[N, C, A]`` with ``-1`` (or anything below ``min_score``) for non-candidates.
        rounds: selections per class.
        iou_threshold: the linear method's threshold.
        sigma: the gaussian method's width.
        min_score: pairs whose decayed score is below it are dropped.
        method: ``'linear'`` or ``'gaussian'``.

    Returns:
        ``(selected_scores, selected_boxes)``: ``Tensor[N, C, rounds]`` decayed scores at selection (``-1`` where
        a class ran out of pairs) and ``Tensor[N, C, rounds]`` int64 box indices.
    """
    # the smallest float32 not below min_score, as the kernel compares (scores below it are dropped)
    thr32 = torch.tensor(min_score, dtype=torch.float32)
    if thr32.double() < min_score:
        thr32 = torch.nextafter(thr32, torch.tensor(float('inf')))
    min_s = float(thr32)

    def one_round(s: Tensor, _: Any = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Remaining scores -> (remaining scores after the round, (selected score, selected box))."""
        best = s.argmax(dim=2, keepdim=True)  # (N, C, 1), the first of equal maxima: the lowest index
        best_score = s.gather(2, best)  # (N, C, 1)
        selected = torch.where(best_score >= min_s, best_score, _NOT_CANDIDATE)
        best_box = boxes.gather(1, best.reshape(best.shape[0], -1, 1).expand(-1, -1, 4))  # (N, C, 4)
        iou = _pair_iou(best_box[:, :, None, :], boxes[:, None, :, :])  # (N, C, A)
        if method == 'linear':
            decayed = s * (1 - torch.where(iou > iou_threshold, iou, 0.0))
        else:
            decayed = s * torch.exp(torch.where(iou > 0, -(iou * iou) / sigma, 0.0))
        s = torch.where(decayed < min_s, _NOT_CANDIDATE, decayed)
        return s.scatter(2, best, _NOT_CANDIDATE), (selected, best.clone())  # the selected pair leaves

    s = torch.where(scores < min_s, _NOT_CANDIDATE, scores)
    if torch.compiler.is_exporting():
        from torch._higher_order_ops.scan import scan

        _, (sel_scores, sel_boxes) = scan(one_round, s, None, length=rounds)  # (rounds, N, C, 1) each
        return sel_scores[..., 0].permute(1, 2, 0), sel_boxes[..., 0].permute(1, 2, 0)
    sel_scores, sel_boxes = [], []
    for _ in range(rounds):
        s, (selected, best) = one_round(s)
        sel_scores.append(selected)
        sel_boxes.append(best)
    return torch.cat(sel_scores, dim=2), torch.cat(sel_boxes, dim=2)


def detection_cap(cfg: TestConfig, num_classes: int) -> int:
    """The most detections an image can return: ``max_per_img``, else ``max_per_class * num_classes``, else 0
    (no bound)."""
    if cfg.max_per_img > 0:
        return cfg.max_per_img
    if cfg.max_per_class > 0:
        return cfg.max_per_class * num_classes
    return 0


class DetectorGraph(nn.Module):
    """A detector with its pre- and post-processing, ``uint8 image -> (boxes, scores, labels)``.

    Args:
        detector: a :class:`~detkit.models.detectors.SingleStageDetector` (any module with ``forward(images) ->
            (cls_scores, bbox_preds)`` and an :class:`AnchorHead` as ``bbox_head``), in eval mode.
        spec: the test pipeline.
        test_cfg: the post-processing (the detector's ``test_cfg`` when ``None``).
        batched: take ``Tensor[N, H, W, 3]`` and return padded outputs plus the count per image (else one
            ``Tensor[H, W, 3]`` image and its ``K`` detections).
        max_dets: detections per image (the padded length with ``batched``); default :func:`detection_cap`.

    Raises:
        ValueError: soft-NMS without ``max_per_class``, or a batched graph without any cap.
    """

    def __init__(self, detector: nn.Module, spec: PreprocessSpec, test_cfg: TestConfig | None = None,
                 batched: bool = False, max_dets: int | None = None) -> None:
        super().__init__()
        head = detector.bbox_head
        if not isinstance(head, AnchorHead):
            raise ValueError(f'DetectorGraph needs an AnchorHead, got {type(head).__name__}')
        self.detector = detector
        self.spec = spec
        self.cfg = test_cfg if test_cfg is not None else detector.test_cfg
        self.batched = batched
        if self.cfg.nms.type == 'soft_nms' and self.cfg.max_per_class <= 0:
            raise ValueError('soft-NMS exports as max_per_class rounds: test_cfg.max_per_class must be > 0 '
                             '(M2Det keeps 50); or export with hard NMS')
        cap = detection_cap(self.cfg, head.num_classes) if max_dets is None else int(max_dets)
        if batched and cap <= 0:
            raise ValueError('a batched graph pads its outputs to a cap on the detections per image, and test_cfg '
                             'has none (max_per_img and max_per_class are 0): give max_dets')
        self.max_dets = cap

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """Detections of a uint8 BGR image (or a same-size batch with ``batched``).

        Returns:
            Without ``batched``: ``boxes Tensor[K, 4]`` float32 in the image's pixels, ``scores Tensor[K]``,
            ``labels Tensor[K]`` int64, by descending score. With ``batched``: ``Tensor[N, D, 4]``, ``Tensor[N, D]``,
            ``Tensor[N, D]`` (padding: zeros and label -1) and ``num_dets Tensor[N]`` int64.
        """
        batch = images if self.batched else images[None]
        ori_h, ori_w = batch.shape[1], batch.shape[2]
        inputs, (img_h, img_w), scale = preprocess(self.spec, batch)
        cls_scores, bbox_preds = self.detector(inputs)
        boxes, scores = self.candidates(cls_scores, bbox_preds, (img_h, img_w), (ori_h, ori_w), scale)
        det_scores, det_boxes, det_labels = self.nms(boxes, scores)
        top_scores, top = det_scores.topk(self._k(det_scores.shape[1]), dim=1)  # (N, D), sorted
        labels = det_labels.gather(1, top)
        out_boxes = boxes.gather(1, det_boxes.gather(1, top)[..., None].expand(-1, -1, 4))
        valid = top_scores > _NOT_CANDIDATE / 2
        if not self.batched:
            keep = valid[0].nonzero().squeeze(1)
            return out_boxes[0, keep], top_scores[0, keep], labels[0, keep]
        return (out_boxes * valid[..., None], top_scores * valid, torch.where(valid, labels, -1),
                valid.sum(dim=1))

    def _k(self, available: Any) -> Any:
        return available if self.max_dets <= 0 else torch.sym_min(self.max_dets, available)

    def candidates(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], img_shape: tuple[Any, Any],
                   ori_shape: tuple[Any, Any], scale: Tensor) -> tuple[Tensor, Tensor]:
        """Every anchor's box in original-image pixels and the candidates' scores.

        Returns:
            ``boxes Tensor[N, A, 4]`` and ``scores Tensor[N, C, A]`` (``-1`` for pairs that are not candidates).
        """
        head: AnchorHead = self.detector.bbox_head
        cfg = self.cfg
        levels = []
        for level_logits in cls_scores:
            logits = flatten_levels([level_logits], head.cls_out_channels)  # (N, A_l, C or C + 1)
            s = logits.sigmoid() if head.use_sigmoid else logits.softmax(dim=-1)[..., :-1]  # (N, A_l, C)
            cand = s > cfg.score_thr
            flat = s.masked_fill(~cand, _NOT_CANDIDATE).flatten(1)  # (N, A_l * C)
            if cfg.nms_pre > 0:
                # the nms_pre best candidates of the level: the best pairs overall, less those below score_thr
                top = flat.topk(torch.sym_min(cfg.nms_pre, flat.shape[1]), dim=1).indices
                chosen = torch.zeros_like(cand.flatten(1)).scatter(1, top, True)
                flat = flat.masked_fill(~chosen, _NOT_CANDIDATE)
            levels.append(flat.view(s.shape))
        scores = torch.cat(levels, dim=1).transpose(1, 2)  # (N, C, A)
        if cfg.nms_pre_per_class > 0:
            top = scores.topk(torch.sym_min(cfg.nms_pre_per_class, scores.shape[2]), dim=2).indices
            chosen = torch.zeros_like(scores, dtype=torch.bool).scatter(2, top, True)
            scores = scores.masked_fill(~chosen, _NOT_CANDIDATE)

        anchors = torch.cat(self.anchors(cls_scores), dim=0)  # (A, 4)
        deltas = flatten_levels(bbox_preds, 4)  # (N, A, 4)
        boxes = head.bbox_coder.decode(anchors, deltas)  # clipped below, with sizes that may be symbolic
        if getattr(head.bbox_coder, 'clip_border', True):
            boxes = _clip(boxes, _shape_tensor(boxes, (img_shape[1], img_shape[0])))
        boxes = _clip(boxes / scale.repeat(2), _shape_tensor(boxes, (ori_shape[1], ori_shape[0])))
        if cfg.min_bbox_size >= 0:
            wh = boxes[..., 2:] - boxes[..., :2]
            big = (wh > cfg.min_bbox_size).all(dim=-1)  # (N, A)
            scores = scores.masked_fill(~big[:, None, :], _NOT_CANDIDATE)
        return boxes, scores

    def anchors(self, cls_scores: Sequence[Tensor]) -> list[Tensor]:
        """Anchors of every level, as the generator's ``grid_priors`` makes them, from sizes that may be symbolic.

        Not ``grid_priors`` itself: it turns the sizes into Python ints (fixing a symbolic size) and caches its
        anchors, which would keep the tracer's fake tensors for later eager calls.
        """
        gen = self.detector.bbox_head.anchor_generator
        sizes = [(s.shape[2], s.shape[3]) for s in cls_scores]
        if gen.input_size is not None:  # anchors for one input size: static sizes, checked as predict checks them
            gen.check_featmap_sizes(sizes)
        out = []
        for level, (h, w) in enumerate(sizes):
            if gen.strides_from_input:  # integer arithmetic: the padded input size // the map size
                (h0, w0), s0 = sizes[0], int(gen.strides[0])  # as _grid_strides: int(h0 * s0)
                stride_y, stride_x = (h0 * s0) // h, (w0 * s0) // w
                shift_x = (torch.arange(w) * stride_x).to(torch.float64)
                shift_y = (torch.arange(h) * stride_y).to(torch.float64)
            else:
                shift_x = torch.arange(w, dtype=torch.float64) * gen.strides[level]
                shift_y = torch.arange(h, dtype=torch.float64) * gen.strides[level]
            yy, xx = torch.meshgrid(shift_y, shift_x, indexing='ij')
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)  # (HW, 1, 4), row-major locations
            out.append((shifts + gen.base_anchors[level][None]).reshape(-1, 4).to(cls_scores[0].dtype))
        return out

    def nms(self, boxes: Tensor, scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Class-aware NMS of the candidates.

        Returns:
            ``(scores, box_index, label)``, each ``Tensor[N, M]``: the kept pairs' (decayed) scores, ``-1`` where
            nothing is kept, with their box indices and classes.
        """
        n, c, a = scores.shape
        cfg = self.cfg
        if cfg.nms.type == 'soft_nms':
            rounds = cfg.max_per_class
            sel_scores, sel_boxes = soft_nms_rounds(boxes, scores, rounds, cfg.nms.iou_threshold, cfg.nms.sigma,
                                                    cfg.nms.min_score, cfg.nms.method)
            labels = torch.arange(c, device=scores.device).view(1, c, 1).expand(n, c, rounds)
            return sel_scores.reshape(n, -1), sel_boxes.reshape(n, -1), labels.reshape(n, -1)
        # candidates score > score_thr >= 0 > -0.5 > the non-candidates' -1
        sel = torch.ops.detkit_deploy.nms_per_class(boxes, scores, cfg.max_per_class, cfg.nms.iou_threshold,
                                                    _NOT_CANDIDATE / 2)
        kept = torch.zeros_like(scores, dtype=torch.bool)
        kept = kept.index_put((sel[:, 0], sel[:, 1], sel[:, 2]), torch.ones_like(sel[:, 0], dtype=torch.bool))
        kept_scores = torch.where(kept, scores, _NOT_CANDIDATE).reshape(n, -1)  # (N, C * A), class-major
        box_idx = torch.arange(a, device=scores.device).view(1, 1, a).expand(n, c, a).reshape(n, -1)
        labels = torch.arange(c, device=scores.device).view(1, c, 1).expand(n, c, a).reshape(n, -1)
        return kept_scores, box_idx, labels


def _clip(boxes: Tensor, wh: Tensor) -> Tensor:
    """Clip ``x`` to ``[0, wh[0]]`` and ``y`` to ``[0, wh[1]]``: ``clamp(min=0, max=...)`` with a tensor bound."""
    return torch.minimum(boxes.clamp(min=0), wh.to(boxes.dtype).repeat(2))
