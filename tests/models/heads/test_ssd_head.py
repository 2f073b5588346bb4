import math

import pytest
import torch
import torch.nn.functional as F

from detkit.models.heads import SSDHead
from detkit.models.heads.ssd_head import flatten_levels
from detkit.registry import MODELS
from detkit.task_modules import MaxIoUAssigner

NUM_CLASSES = 2


def small_head(**kwargs) -> SSDHead:
    """Two levels on a 32x32 input: 2x2 and 1x1 maps, 4 anchors per location, 20 anchors."""
    cfg = dict(type='SSDHead', num_classes=NUM_CLASSES, in_channels=(8, 16),
               anchor_generator=dict(type='SSDAnchorGenerator', input_size=32, strides=[16, 32], ratios=[[2], [2]],
                                     min_sizes=[8, 16], max_sizes=[16, 32]))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def feats(n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 8, 2, 2, generator=g), torch.randn(n, 16, 1, 1, generator=g)]


def reference_loss(head, cls_scores, bbox_preds, targets, neg_pos_ratio=3, neg_per_empty_img=3, beta=1.0):
    """Plain per-image MultiBox loss (sort-based hard negative mining) as the oracle."""
    anchors = torch.cat(head.anchors(cls_scores))
    logits = flatten_levels(cls_scores, NUM_CLASSES + 1)
    deltas = flatten_levels(bbox_preds, 4)
    total_cls, total_box, total_pos = 0.0, 0.0, 0
    for i, t in enumerate(targets):
        res = head.assigner.assign(anchors, t['boxes'], t['labels'])
        pos = res.gt_inds > 0
        neg = res.gt_inds == 0
        labels = torch.full((anchors.shape[0],), NUM_CLASSES)
        labels[pos] = t['labels'][res.gt_inds[pos] - 1]
        ce = F.cross_entropy(logits[i], labels, reduction='none')
        n_pos = int(pos.sum())
        n_neg = min(int(neg.sum()), neg_pos_ratio * n_pos if n_pos else neg_per_empty_img)
        total_cls += ce[pos].sum() + ce[neg].sort(descending=True).values[:n_neg].sum()
        if n_pos:
            tgt = head.bbox_coder.encode(anchors[pos], t['boxes'][res.gt_inds[pos] - 1])
            total_box += F.smooth_l1_loss(deltas[i][pos], tgt, beta=beta, reduction='sum')
        total_pos += n_pos
    norm = max(total_pos, 1)
    return total_cls / norm, total_box / norm


def test_outputs_and_background_index():
    head = small_head()
    assert head.cls_out_channels == NUM_CLASSES + 1 and head.num_base_priors == [4, 4]
    cls_scores, bbox_preds = head(feats())
    assert [tuple(c.shape) for c in cls_scores] == [(2, 12, 2, 2), (2, 12, 1, 1)]
    assert [tuple(b.shape) for b in bbox_preds] == [(2, 16, 2, 2), (2, 16, 1, 1)]


@pytest.mark.parametrize('use_depthwise', [False, True])
def test_convs_are_xavier_uniform_with_zero_bias_and_norms_unit(use_depthwise):
    torch.manual_seed(0)
    head = small_head(in_channels=(64, 96), use_depthwise=use_depthwise)
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == (8 if use_depthwise else 4)  # (depthwise +) predictor, cls and reg, two levels
    for conv in convs:
        w = conv.weight.detach()
        k = w.shape[2] * w.shape[3]
        fan_in, fan_out = w.shape[1] * k, w.shape[0] * k
        bound = math.sqrt(6.0 / (fan_in + fan_out))  # xavier_uniform_ with gain 1: U(-bound, bound)
        # PyTorch's default (kaiming_uniform_, a=sqrt(5)) draws from U(+-1/sqrt(fan_in)): another bound and std
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound, (tuple(w.shape), bound)
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.15), tuple(w.shape)
        assert conv.bias is None or not conv.bias.any()
    assert sum(c.bias is not None for c in convs) == 4  # the predictors (a depthwise conv has a norm instead)
    norms = [m for m in head.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == (4 if use_depthwise else 0)
    for bn in norms:
        assert (bn.weight == 1).all() and not bn.bias.any()


def test_loss_matches_reference():
    head = small_head()
    cls_scores, bbox_preds = head(feats(3))
    targets = [{'boxes': torch.tensor([[2., 2., 12., 12.], [10., 4., 30., 28.]]), 'labels': torch.tensor([0, 1])},
               {'boxes': torch.tensor([[16., 16., 31., 31.]]), 'labels': torch.tensor([1])},
               {'boxes': torch.zeros(0, 4), 'labels': torch.zeros(0, dtype=torch.long)}]  # background only
    losses = head.loss(cls_scores, bbox_preds, targets)
    ref_cls, ref_box = reference_loss(head, cls_scores, bbox_preds, targets)
    torch.testing.assert_close(losses['loss_cls'], ref_cls)
    torch.testing.assert_close(losses['loss_bbox'], ref_box)
    assert set(losses) == {'loss_cls', 'loss_bbox'}


def test_no_ground_truth_only_negatives():
    head = small_head()
    cls_scores, bbox_preds = head(feats())
    empty = [{'boxes': torch.zeros(0, 4), 'labels': torch.zeros(0, dtype=torch.long)}] * 2
    losses = head.loss(cls_scores, bbox_preds, empty)
    assert losses['loss_bbox'].item() == 0
    # the class loss is the background cross-entropy of the 3 hardest anchors of each image, over 1 (no positives)
    ce = F.cross_entropy(flatten_levels(cls_scores, 3).reshape(-1, 3), torch.full((40,), NUM_CLASSES),
                         reduction='none').view(2, 20)
    expected = ce.sort(dim=1, descending=True).values[:, :3].sum()
    torch.testing.assert_close(losses['loss_cls'], expected)
    assert losses['loss_cls'] > 0
    losses['loss_cls'].backward()  # gradients flow through the mined negatives
    assert head.cls_convs[0].weight.grad.abs().sum() > 0
    # neg_per_empty_img=0 is torchvision's and mmdetection's behaviour: nothing learned from such images
    head0 = small_head(neg_per_empty_img=0)
    assert head0.loss(*head0(feats()), empty)['loss_cls'].item() == 0


def test_hard_negative_ratio_and_beta_are_used():
    head = small_head(neg_pos_ratio=1, loss_bbox=dict(type='SmoothL1Loss', beta=0.5))
    cls_scores, bbox_preds = head(feats())
    targets = [{'boxes': torch.tensor([[2., 2., 12., 12.]]), 'labels': torch.tensor([1])}] * 2
    losses = head.loss(cls_scores, bbox_preds, targets)
    ref_cls, ref_box = reference_loss(head, cls_scores, bbox_preds, targets, neg_pos_ratio=1, beta=0.5)
    torch.testing.assert_close(losses['loss_cls'], ref_cls)
    torch.testing.assert_close(losses['loss_bbox'], ref_box)


def test_ignored_anchors_are_in_no_loss():
    head = small_head(assigner=MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0,
                                              gt_max_assign_all=False, ignore_iof_thr=0.5))
    cls_scores, bbox_preds = head(feats(1))
    anchors = torch.cat(head.anchors(cls_scores))
    target = {'boxes': torch.tensor([[2., 2., 12., 12.]]), 'labels': torch.tensor([0]),
              'ignore_boxes': torch.tensor([[16., 0., 32., 32.]])}  # the right half of the image
    labels, pos, neg, _, _ = head.get_targets(anchors, [target])
    in_ignore = (anchors[:, 0] >= 16) & (anchors[:, 2] <= 32)  # the 8 anchors of the two right locations
    assert in_ignore.sum() == 8
    assert not (pos | neg)[0, in_ignore].any()  # ignored: in no loss
    assert (pos | neg)[0, ~in_ignore].all() and pos.any()
    assert (labels[0, ~pos[0]] == NUM_CLASSES).all()


def test_bad_labels_and_mismatched_levels_are_named():
    head = small_head()
    out = head(feats(1))
    with pytest.raises(ValueError, match='0..1'):
        head.loss(*out, [{'boxes': torch.tensor([[0., 0., 5., 5.]]), 'labels': torch.tensor([2])}])
    with pytest.raises(ValueError, match='1 boxes but 2 labels'):
        head.loss(*out, [{'boxes': torch.tensor([[0., 0., 5., 5.]]), 'labels': torch.tensor([0, 1])}])
    with pytest.raises(ValueError, match='anchor generator has 2 levels'):
        small_head(in_channels=(8, 16, 32))


def hand_made_outputs(boost: dict[tuple[int, int], int]):
    """Level outputs where every anchor is background (logit 10) except anchors ``(level, index) -> class``."""
    cls_scores = [torch.zeros(1, 12, 2, 2), torch.zeros(1, 12, 1, 1)]
    flat = [c.permute(0, 2, 3, 1).reshape(-1, 3) for c in cls_scores]  # views: (HWA, C + 1)
    for f in flat:
        f[:, NUM_CLASSES] = 10.0
    for (level, index), cls in boost.items():
        flat[level][index] = 0.0
        flat[level][index, cls] = 10.0
    cls_scores = [f.reshape(1, h, w, 12).permute(0, 3, 1, 2) for f, (h, w) in zip(flat, [(2, 2), (1, 1)])]
    bbox_preds = [torch.zeros(1, 16, 2, 2), torch.zeros(1, 16, 1, 1)]
    return cls_scores, bbox_preds


def test_predict_decodes_rescales_and_clips():
    head = small_head()
    # anchor 0 of level 1: the 16x16 square at (16, 16) -> (8, 8, 24, 24); anchor 2 of level 0 at location (0, 0):
    # the wide box 8*sqrt(2) x 8/sqrt(2) centred at (8, 8)
    cls_scores, bbox_preds = hand_made_outputs({(1, 0): 1, (0, 2): 0})
    score = math.exp(10) / (math.exp(10) + 2)
    meta = {'img_shape': (32, 32), 'ori_shape': (40, 30), 'scale_factor': (0.5, 2.0)}
    (res,) = head.predict(cls_scores, bbox_preds, [meta], rescale=True)
    assert res['labels'].tolist() == [1, 0] or res['labels'].tolist() == [0, 1]
    by_label = {int(lab): (b, s) for lab, b, s in zip(res['labels'], res['boxes'], res['scores'])}
    torch.testing.assert_close(by_label[1][1], torch.tensor(score))
    # input (8, 8, 24, 24) -> original x / 0.5, y / 2 -> (16, 4, 48, 12), x clipped to the width 30
    torch.testing.assert_close(by_label[1][0], torch.tensor([16., 4., 30., 12.]))
    half_w, half_h = 4 * math.sqrt(2), 4 / math.sqrt(2)
    torch.testing.assert_close(by_label[0][0], torch.tensor([(8 - half_w) / 0.5, (8 - half_h) / 2,
                                                             (8 + half_w) / 0.5, (8 + half_h) / 2]))
    # input-image boxes without rescale
    (res_in,) = head.predict(cls_scores, bbox_preds, [meta], rescale=False)
    assert [8., 8., 24., 24.] in res_in['boxes'].tolist()
    # a box pushed entirely outside the original image by the rescale is clipped to nothing and dropped
    cls_scores, bbox_preds = hand_made_outputs({(0, 4 + 2): 0})  # the wide box at (24, 8): x from 36.7 to 59.3
    assert len(head.predict(cls_scores, bbox_preds, [meta], rescale=True)[0]['boxes']) == 0


def test_predict_thresholds_nms_and_max_per_img():
    head = small_head()
    # anchors 0 and 1 of level 1 (16x16 and 22.6x22.6 squares, IoU 0.5) both say class 1; anchor 2 says class 0
    cls_scores, bbox_preds = hand_made_outputs({(1, 0): 1, (1, 1): 1, (1, 2): 0})
    nms45, nms60 = dict(type='nms', iou_threshold=0.45), dict(type='nms', iou_threshold=0.6)
    (res,) = head.predict(cls_scores, bbox_preds, rescale=False, test_cfg=dict(nms=nms45))
    assert sorted(res['labels'].tolist()) == [0, 1]  # the two class-1 boxes overlap with IoU 0.5 > 0.45
    (res,) = head.predict(cls_scores, bbox_preds, rescale=False, test_cfg=dict(nms=nms60))
    assert sorted(res['labels'].tolist()) == [0, 1, 1]
    (res,) = head.predict(cls_scores, bbox_preds, rescale=False, test_cfg=dict(nms=nms60, max_per_img=1))
    assert len(res['boxes']) == 1
    # the scores are e^10 / (e^10 + 2) = 0.99991
    (res,) = head.predict(cls_scores, bbox_preds, rescale=False, test_cfg=dict(score_thr=0.99995))
    assert len(res['boxes']) == 0 and res['boxes'].shape == (0, 4)
    # nms_pre keeps the best candidates of each level before NMS
    (res,) = head.predict(cls_scores, bbox_preds, rescale=False, test_cfg=dict(nms=nms60, nms_pre=1))
    assert len(res['boxes']) == 1
    # max_per_class: one of the two class-1 boxes goes, class 0 keeps its one
    (res,) = head.predict(cls_scores, bbox_preds, rescale=False, test_cfg=dict(nms=nms60, max_per_class=1))
    assert sorted(res['labels'].tolist()) == [0, 1]
    with pytest.raises(ValueError, match='scale_factor'):
        head.predict(cls_scores, bbox_preds, [{}], rescale=True)


def test_depthwise_head():
    head = small_head(use_depthwise=True, act='relu6', bn_eps=1e-3, bn_momentum=0.03)
    dw, pw = head.cls_convs[0]
    assert dw.conv.groups == 8 and dw.bn.eps == 1e-3 and isinstance(dw.act, torch.nn.ReLU6)
    assert pw.kernel_size == (1, 1) and pw.out_channels == 12
    cls_scores, _ = head(feats())
    assert cls_scores[1].shape == (2, 12, 1, 1)


def test_predict_equals_torchvision_ssd_postprocess():
    """nms_pre_per_class reproduces torchvision's SSD post-processing: per class, the scores above the threshold,
    the best topk_candidates of them over all levels, class-aware NMS, the best detections_per_img."""
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.ssd import SSD

    num_classes = 6
    head = MODELS.build(dict(
        type='SSDHead', num_classes=num_classes, in_channels=(8, 16),
        anchor_generator=dict(type='SSDAnchorGenerator', input_size=64, strides=[8, 16], ratios=[[2, 3], [2]],
                              min_sizes=[8, 24], max_sizes=[24, 48])))
    g = torch.Generator().manual_seed(5)
    cls_scores = [torch.randn(2, 6 * (num_classes + 1), 8, 8, generator=g) * 2,
                  torch.randn(2, 4 * (num_classes + 1), 4, 4, generator=g) * 2]
    bbox_preds = [torch.randn(2, 24, 8, 8, generator=g), torch.randn(2, 16, 4, 4, generator=g)]
    anchors = torch.cat(head.anchors(cls_scores))
    tv = SSD.__new__(SSD)  # only its post-processing
    torch.nn.Module.__init__(tv)
    tv.box_coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    tv.score_thresh, tv.topk_candidates, tv.nms_thresh, tv.detections_per_img = 0.2, 30, 0.45, 60
    logits = flatten_levels(cls_scores, num_classes + 1)  # (N, A, 7), background last
    tv_logits = torch.cat([logits[..., -1:], logits[..., :-1]], dim=-1)  # torchvision: background first
    expected = tv.postprocess_detections(
        {'cls_logits': tv_logits, 'bbox_regression': flatten_levels(bbox_preds, 4)}, [anchors, anchors],
        [(64, 64), (64, 60)])
    cfg = dict(score_thr=0.2, nms_pre=0, nms_pre_per_class=30, min_bbox_size=-1,
               nms=dict(type='nms', iou_threshold=0.45), max_per_img=60)
    got = head.predict(cls_scores, bbox_preds, [{'img_shape': (64, 64)}, {'img_shape': (64, 60)}], rescale=False,
                       test_cfg=cfg)
    for g_, e in zip(got, expected):
        assert len(e['boxes']) == 60  # the per-image cap is reached, so the per-class cap decided what competed
        torch.testing.assert_close(g_['labels'] + 1, e['labels'])
        torch.testing.assert_close(g_['scores'], e['scores'])
        torch.testing.assert_close(g_['boxes'], e['boxes'], rtol=0, atol=1e-4)
    # without the per-class cap (all candidates of the level) the detections differ
    unlimited = head.predict(cls_scores, bbox_preds, [{'img_shape': (64, 64)}] * 2, rescale=False,
                             test_cfg=dict(cfg, nms_pre_per_class=0))
    assert not torch.equal(unlimited[0]['scores'], expected[0]['scores'])
