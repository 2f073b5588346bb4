"""RetinaHead against torchvision's RetinaNetHead: same weights give the same outputs, loss and detections."""
import math

import pytest
import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead

from detkit.models.heads import RetinaHead
from detkit.models.heads.anchor_head import flatten_levels
from detkit.registry import MODELS

NUM_CLASSES, CH = 5, 16
SIZES = [(8, 10), (4, 5)]  # two levels of an 64x80 input at strides 8 and 16


def small_head(**kwargs) -> RetinaHead:
    cfg = dict(type='RetinaHead', num_classes=NUM_CLASSES, in_channels=(CH, CH), stacked_convs=2, feat_channels=CH,
               anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                                     ratios=[0.5, 1.0, 2.0], strides=[8, 16]))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def torchvision_twin(head: RetinaHead) -> RetinaNetHead:
    """torchvision's head with detkit's weights: its towers are conv+ReLU pairs in a Sequential."""
    tv = RetinaNetHead(CH, 9, NUM_CLASSES)
    for tv_part, convs, last in ((tv.classification_head, head.cls_convs, head.retina_cls),
                                 (tv.regression_head, head.reg_convs, head.retina_reg)):
        tv_part.conv = torch.nn.Sequential(*[m for c in convs for m in (c.conv, torch.nn.ReLU())])
        out = tv_part.cls_logits if hasattr(tv_part, 'cls_logits') else tv_part.bbox_reg
        out.load_state_dict(last.state_dict())
    return tv


def feats(n=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, CH, h, w, generator=g) for h, w in SIZES]


def test_init_and_layout():
    head = small_head()
    assert head.cls_out_channels == NUM_CLASSES and head.use_sigmoid  # no background channel
    torch.testing.assert_close(head.retina_cls.bias.sigmoid(), torch.full((9 * NUM_CLASSES,), 0.01))
    # every conv N(0, 0.01) with zero bias (but the classifier's prior); PyTorch's default would be ~10x wider
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 * 2 + 2  # two stacked convs per tower, the classifier and the regressor
    weights = torch.cat([c.weight.detach().flatten() for c in convs])
    assert float(weights.std()) == pytest.approx(0.01, rel=0.05) and abs(float(weights.mean())) < 1e-3
    assert all(not c.bias.any() for c in convs if c is not head.retina_cls)
    cls_scores, bbox_preds = head(feats(2))
    assert [tuple(c.shape) for c in cls_scores] == [(2, 45, 8, 10), (2, 45, 4, 5)]
    assert [tuple(b.shape) for b in bbox_preds] == [(2, 36, 8, 10), (2, 36, 4, 5)]
    assert head.loss_cls.gamma == 2.0 and head.loss_cls.alpha == 0.25
    assert (head.assigner.pos_iou_thr, head.assigner.neg_iou_thr) == (0.5, 0.4)


def test_loss_equals_torchvision():
    torch.manual_seed(0)
    head = small_head()
    for p in head.parameters():  # away from the init so that the loss terms are not trivial
        p.data.add_(torch.randn_like(p) * 0.05)
    tv = torchvision_twin(head)
    x = feats(1)
    cls_scores, bbox_preds = head(x)
    tv_out = tv(x)
    torch.testing.assert_close(flatten_levels(cls_scores, NUM_CLASSES), tv_out['cls_logits'])
    torch.testing.assert_close(flatten_levels(bbox_preds, 4), tv_out['bbox_regression'])
    target = {'boxes': torch.tensor([[5., 6., 40., 30.], [30., 20., 75., 60.], [0., 0., 12., 9.]]),
              'labels': torch.tensor([1, 4, 0])}
    losses = head.loss(cls_scores, bbox_preds, [target])
    anchors = torch.cat(head.anchors(cls_scores))
    # the same assignment in torchvision's encoding (its Matcher gives a low-quality anchor to the anchor's own best
    # box, mmdetection's assigner to the box it is best for; the loss is what is compared here)
    gt_inds = head.assigner.assign(anchors, target['boxes'], target['labels']).gt_inds
    matched = torch.where(gt_inds > 0, gt_inds - 1, torch.where(gt_inds == 0, det_utils.Matcher.BELOW_LOW_THRESHOLD,
                                                                det_utils.Matcher.BETWEEN_THRESHOLDS))
    assert (matched == -2).any() and (matched >= 0).sum() > 3
    ref = tv.compute_loss([target], tv_out, [anchors], [matched])
    torch.testing.assert_close(losses['loss_cls'], ref['classification'])
    torch.testing.assert_close(losses['loss_bbox'], ref['bbox_regression'])


def test_predict_equals_torchvision_postprocess():
    torch.manual_seed(1)
    head = small_head()
    torch.nn.init.normal_(head.retina_cls.bias, mean=-1.5, std=1.0)  # many scores above 0.05, some ties broken
    x = feats(2, seed=3)
    cls_scores, bbox_preds = head(x)
    anchors = head.anchors(cls_scores)
    tv_model = RetinaNet.__new__(RetinaNet)  # only its post-processing: no backbone needed
    torch.nn.Module.__init__(tv_model)
    tv_model.box_coder = det_utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    tv_model.score_thresh, tv_model.nms_thresh, tv_model.detections_per_img, tv_model.topk_candidates = \
        0.05, 0.5, 100, 1000
    split = [h * w * 9 for h, w in SIZES]
    logits = flatten_levels(cls_scores, NUM_CLASSES)
    deltas = flatten_levels(bbox_preds, 4)
    head_outputs = {'cls_logits': list(logits.split(split, dim=1)), 'bbox_regression': list(deltas.split(split, dim=1))}
    expected = tv_model.postprocess_detections(head_outputs, [anchors, anchors], [(60, 75), (64, 80)])
    metas = [{'img_shape': (60, 75)}, {'img_shape': (64, 80)}]
    got = head.predict(cls_scores, bbox_preds, metas, rescale=False,
                       test_cfg=dict(min_bbox_size=-1))  # torchvision keeps empty boxes
    for g, e in zip(got, expected):
        assert len(g['boxes']) == len(e['boxes']) > 20
        torch.testing.assert_close(g['scores'], e['scores'])
        torch.testing.assert_close(g['labels'], e['labels'])
        torch.testing.assert_close(g['boxes'], e['boxes'], rtol=0, atol=1e-4)


def test_ignored_anchors_and_giou_loss():
    head = small_head(loss_bbox=dict(type='GIoULoss', loss_weight=2.0))
    cls_scores, bbox_preds = head(feats(1))
    target = {'boxes': torch.tensor([[8., 8., 40., 40.]]), 'labels': torch.tensor([2])}
    anchors = torch.cat(head.anchors(cls_scores))
    t = head.get_targets(anchors, [target])
    ignored = ~(t.pos_mask | t.neg_mask)
    assert ignored.any() and t.pos_mask.any()
    losses = head.loss(cls_scores, bbox_preds, [target])
    # the focal loss leaves out the ignored anchors: perturbing their logits changes nothing
    bumped = [c.clone() for c in cls_scores]
    flat = flatten_levels(bumped, NUM_CLASSES)
    flat[ignored] += 5.0
    level0 = SIZES[0][0] * SIZES[0][1] * 9
    bumped = [flat[:, :level0].reshape(1, *SIZES[0], 45).permute(0, 3, 1, 2),
              flat[:, level0:].reshape(1, *SIZES[1], 45).permute(0, 3, 1, 2)]
    torch.testing.assert_close(head.loss(bumped, bbox_preds, [target])['loss_cls'], losses['loss_cls'])
    # GIoU on decoded boxes, weight 2, over the positives
    deltas = flatten_levels(bbox_preds, 4)[t.pos_mask]
    decoded = head.bbox_coder.decode(t.pos_anchors, deltas)
    from torchvision.ops import generalized_box_iou_loss
    expected = 2 * generalized_box_iou_loss(decoded, t.pos_gt_boxes, reduction='sum') / t.pos_mask.sum()
    torch.testing.assert_close(losses['loss_bbox'], expected, rtol=1e-5, atol=1e-6)


def test_no_ground_truth_only_negatives():
    head = small_head()
    cls_scores, bbox_preds = head(feats(1))
    losses = head.loss(cls_scores, bbox_preds, [{'boxes': torch.zeros(0, 4), 'labels': torch.zeros(0, dtype=torch.long)}])
    assert losses['loss_bbox'].item() == 0
    # every anchor is a negative at p = 0.01: focal loss 0.75 * 0.01^2 * -log(0.99) each, over 1
    n = sum(h * w * 9 for h, w in SIZES) * NUM_CLASSES
    p = torch.sigmoid(flatten_levels(cls_scores, NUM_CLASSES))
    expected = (0.75 * p ** 2 * -torch.log(1 - p)).sum()
    torch.testing.assert_close(losses['loss_cls'], expected, rtol=1e-4, atol=1e-6)
    assert math.isclose(expected.item(), n * 0.75 * 1e-4 * -math.log(0.99), rel_tol=0.2)


def test_bad_configurations_are_named():
    with pytest.raises(ValueError, match='same channels'):
        small_head(in_channels=(16, 32))
    with pytest.raises(ValueError, match='sigmoid loss'):
        small_head(loss_cls=dict(type='CrossEntropyLoss'))
    with pytest.raises(ValueError, match='anchor generator has 2 levels'):
        small_head(in_channels=(16, 16, 16))
