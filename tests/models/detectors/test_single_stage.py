import copy

import pytest
import torch

from detkit.models.detectors import SingleStageDetector
from detkit.registry import MODELS
from detkit.structures import bbox_overlaps
from tiny_ssd import TINY_SIZE, synthetic_batch, tiny_ssd_cfg


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return MODELS.build(tiny_ssd_cfg())


def test_three_entry_points(tiny):
    images, targets = synthetic_batch(2)
    cls_scores, bbox_preds = tiny(images)
    assert [tuple(c.shape) for c in cls_scores] == [(2, 16, 8, 8), (2, 16, 4, 4), (2, 16, 2, 2), (2, 16, 1, 1)]
    assert [tuple(b.shape) for b in bbox_preds] == [(2, 16, 8, 8), (2, 16, 4, 4), (2, 16, 2, 2), (2, 16, 1, 1)]
    losses = tiny.loss(images, targets)
    assert set(losses) == {'loss_cls', 'loss_bbox'} and all(v.dim() == 0 for v in losses.values())
    tiny.eval()
    metas = [{'ori_shape': (128, 96), 'img_shape': (64, 64), 'scale_factor': (64 / 96, 0.5)}] * 2
    results = tiny.predict(images, metas)
    assert len(results) == 2
    for r in results:
        assert r['boxes'].shape[1] == 4 and r['scores'].shape == r['labels'].shape == r['boxes'].shape[:1]
        assert r['labels'].dtype == torch.int64 and len(r['boxes']) <= 200
        assert (r['boxes'][:, 2] <= 96).all() and (r['boxes'][:, 3] <= 128).all()  # original-image pixels
    assert tiny.dataset_meta is None  # no class names until a trainer or init_detector gives the dataset's


def test_channels_flow_from_backbone_to_head(tiny):
    assert tiny.neck.in_channels == tiny.backbone.out_channels == (64, 128)
    assert tiny.bbox_head.in_channels == tiny.neck.out_channels == (64, 128, 32, 32)
    cfg = tiny_ssd_cfg()
    cfg['neck']['in_channels'] = (512, 1024)
    with pytest.raises(ValueError, match='neck.in_channels'):
        MODELS.build(cfg)


def test_train_and_test_cfg_are_checked():
    cfg = tiny_ssd_cfg()
    cfg['train_cfg']['neg_pos_ration'] = 3
    with pytest.raises(ValueError, match="'neg_pos_ration'"):
        MODELS.build(cfg)
    cfg = tiny_ssd_cfg()
    cfg['train_cfg'].update(neg_pos_ratio=2)
    cfg['bbox_head']['loss_bbox'] = dict(type='SmoothL1Loss', beta=0.5)
    det = MODELS.build(cfg)
    assert det.bbox_head.neg_pos_ratio == 2 and det.bbox_head.loss_bbox.beta == 0.5
    cfg = tiny_ssd_cfg()
    cfg['test_cfg']['nms'] = dict(type='soft_nms', iou_threshold=0.3, sigmaa=0.5)
    with pytest.raises(ValueError, match=r"test_cfg.nms has unknown key\(s\) \['sigmaa'\] \(did you mean 'sigma'\?\)"):
        MODELS.build(cfg)
    cfg['test_cfg']['nms'] = dict(type='softnms')
    with pytest.raises(ValueError, match="test_cfg.nms.type must be 'nms' or 'soft_nms'"):
        MODELS.build(cfg)
    cfg = tiny_ssd_cfg()
    cfg['test_cfg']['max_per_image'] = 100
    with pytest.raises(ValueError, match=r"\['max_per_image'\] \(did you mean 'max_per_img'\?\)"):
        MODELS.build(cfg)
    test_cfg = MODELS.build(tiny_ssd_cfg()).test_cfg
    assert (test_cfg.score_thr, test_cfg.nms_pre, test_cfg.nms.type, test_cfg.nms.iou_threshold,
            test_cfg.max_per_img, test_cfg.min_bbox_size) == (0.02, 1000, 'nms', 0.45, 200, 0.0)


def test_test_cfg_defaults_come_from_the_head():
    """Keys a test_cfg leaves out keep the head's published setting; the detector has none of its own."""
    cfg = tiny_ssd_cfg()
    cfg['test_cfg'] = dict(score_thr=0.3)
    test_cfg = MODELS.build(cfg).test_cfg
    assert test_cfg.score_thr == 0.3
    assert (test_cfg.nms_pre, test_cfg.nms.iou_threshold, test_cfg.max_per_img) == (1000, 0.45, 200)  # SSD's
    cfg['test_cfg'] = None
    assert MODELS.build(cfg).test_cfg.score_thr == 0.02


def test_wrong_input_size_is_a_clear_error(tiny):
    images, targets = synthetic_batch(1, size=96)
    cls_scores, _ = tiny(images)  # raw outputs work at any size
    assert cls_scores[0].shape[-2:] == (12, 12)
    for call in (lambda: tiny.loss(images, targets), lambda: tiny.predict(images, rescale=False)):
        with pytest.raises(ValueError) as err:
            call()
        msg = str(err.value)
        assert f'{TINY_SIZE}x{TINY_SIZE}' in msg and '(8, 8)' in msg and '(12, 12)' in msg


def test_one_sgd_step_lowers_the_loss(tiny):
    images, targets = synthetic_batch(4, seed=1)
    opt = torch.optim.SGD(tiny.parameters(), lr=1e-3)
    before = sum(tiny.loss(images, targets).values())
    opt.zero_grad()
    before.backward()
    opt.step()
    after = sum(tiny.loss(images, targets).values())
    assert after < before


def test_overfits_20_images(tiny):
    images, targets = synthetic_batch(20)
    opt = torch.optim.Adam(tiny.parameters(), lr=3e-3)
    history = []
    for _ in range(80):
        losses = tiny.loss(images, targets)
        loss = sum(losses.values())
        history.append({k: v.item() for k, v in losses.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
    first, last = sum(history[0].values()), sum(history[-1].values())
    assert last < first / 5, history[::10]
    # not only the class calibration: the boxes are learned too
    assert history[-1]['loss_bbox'] < history[0]['loss_bbox'] / 2.5, history[::10]
    tiny.eval()
    results = tiny.predict(images, rescale=False)
    found = sum(bool(((r['labels'] == label) & (bbox_overlaps(box[None], r['boxes'])[0] > 0.5)).any())
                for r, t in zip(results, targets) for box, label in zip(t['boxes'], t['labels']))
    num_objects = sum(len(t['labels']) for t in targets)
    assert found >= 0.75 * num_objects, (found, num_objects)


def test_init_weights_resets_every_part(tiny):
    with torch.no_grad():
        for p in tiny.parameters():
            p.fill_(5.0)
    tiny.init_weights()
    assert torch.equal(tiny.backbone.l2_norm.weight, torch.full_like(tiny.backbone.l2_norm.weight, 20.0))
    assert tiny.bbox_head.cls_convs[0].bias.abs().max() == 0
    for part in ('backbone', 'neck', 'bbox_head'):  # every parameter of every part, not only the head's
        stale = [n for n, p in getattr(tiny, part).named_parameters() if (p == 5.0).all()]
        assert not stale, f'{part}: {stale} kept their values'


def test_built_parts_can_be_passed_directly():
    cfg = tiny_ssd_cfg()
    backbone = MODELS.build(cfg['backbone'])
    neck = MODELS.build(dict(cfg['neck'], in_channels=backbone.out_channels))
    head = MODELS.build(dict(cfg['bbox_head'], in_channels=neck.out_channels))
    det = SingleStageDetector(backbone=backbone, neck=neck, bbox_head=head)
    assert det.bbox_head is head
    with pytest.raises(ValueError, match='train_cfg'):
        SingleStageDetector(backbone=backbone, neck=neck, bbox_head=copy.deepcopy(head),
                            train_cfg=dict(neg_pos_ratio=3))
    with pytest.raises(ValueError, match='Tensor\\[N, 3, H, W\\]'):
        det(torch.zeros(3, 64, 64))


def test_channels_last_gives_the_same_losses_gradients_and_detections(tiny):
    images, targets = synthetic_batch(2)
    cfg = tiny_ssd_cfg()
    cfg['channels_last'] = True
    nhwc = MODELS.build(cfg)
    nhwc.load_state_dict(tiny.state_dict())
    convs = [m.weight for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert all(m.weight.is_contiguous() for m in tiny.modules() if isinstance(m, torch.nn.Conv2d))
    ref_losses, nhwc_losses = tiny.loss(images, targets), nhwc.loss(images, targets)
    for k in ref_losses:
        torch.testing.assert_close(nhwc_losses[k], ref_losses[k], rtol=1e-4, atol=1e-5)
    sum(ref_losses.values()).backward()
    sum(nhwc_losses.values()).backward()
    for (name, p), q in zip(tiny.named_parameters(), nhwc.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)
    tiny.eval()
    nhwc.eval()
    metas = [{'ori_shape': (64, 64), 'img_shape': (64, 64), 'scale_factor': (1.0, 1.0)}] * 2
    for ref, out in zip(tiny.predict(images, metas), nhwc.predict(images, metas)):
        torch.testing.assert_close(out['scores'][:20], ref['scores'][:20], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out['boxes'][:20], ref['boxes'][:20], rtol=1e-4, atol=1e-3)
