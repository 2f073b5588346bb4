"""test_cfg parsing and the class-aware NMS step (hard and soft, per-class and per-image caps)."""
from pathlib import Path

import pytest
import torch

from detkit.models.utils.postprocess import NMSConfig, TestConfig, multiclass_nms
from detkit.ops import batched_nms, soft_nms
from detkit.registry import MODELS
from detkit.utils import load_config


def candidates(n=300, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 80
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 30 + 5], dim=1)
    return boxes, torch.rand(n, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_defaults_overrides_and_errors():
    defaults = dict(score_thr=0.02, nms_pre=1000, nms=dict(type='nms', iou_threshold=0.45), max_per_img=200)
    cfg = TestConfig.from_cfg(dict(score_thr=0.3, nms=dict(type='soft_nms', method='gaussian', sigma=0.4)), defaults)
    assert (cfg.score_thr, cfg.nms_pre, cfg.max_per_img) == (0.3, 1000, 200)
    assert cfg.nms == NMSConfig(type='soft_nms', method='gaussian', sigma=0.4, iou_threshold=0.5, min_score=1e-3)
    with pytest.raises(ValueError, match=r"\['nms_per'\] \(did you mean 'nms_pre'\?\)"):
        TestConfig.from_cfg(dict(nms_per=5), defaults)
    with pytest.raises(ValueError, match="method must be one of"):
        TestConfig.from_cfg(dict(nms=dict(type='soft_nms', method='exp')), defaults)
    with pytest.raises(ValueError, match='sigma must be > 0'):
        TestConfig.from_cfg(dict(nms=dict(type='soft_nms', method='gaussian', sigma=0)), defaults)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['sigma'\] for type='nms'"):
        TestConfig.from_cfg(dict(nms=dict(type='nms', sigma=0.5)), defaults)
    with pytest.raises(ValueError, match='score_thr must be in'):
        TestConfig.from_cfg(dict(score_thr=1.5), defaults)


def test_hard_nms_and_caps_against_plain_loops():
    boxes, scores, labels = candidates()
    out_boxes, out_scores, out_labels = multiclass_nms(boxes, scores, labels, NMSConfig(iou_threshold=0.5),
                                                       max_per_class=5, max_per_img=12)
    keep = batched_nms(boxes, scores, labels, 0.5)
    expected, per_class = [], {}
    for i in keep.tolist():  # by descending score: the first 5 of each class, then the first 12
        c = int(labels[i])
        per_class[c] = per_class.get(c, 0) + 1
        if per_class[c] <= 5:
            expected.append(i)
    expected = expected[:12]
    torch.testing.assert_close(out_boxes, boxes[expected])
    torch.testing.assert_close(out_scores, scores[expected])
    torch.testing.assert_close(out_labels, labels[expected])


def test_soft_nms_decays_within_each_class_only():
    boxes, scores, labels = candidates(n=120, classes=3, seed=1)
    nms = NMSConfig(type='soft_nms', method='linear', iou_threshold=0.3, sigma=0.5, min_score=0.05)
    out_boxes, out_scores, out_labels = multiclass_nms(boxes, scores, labels, nms, max_per_img=0)
    expected = []  # per class with detkit.ops.soft_nms, then all by descending decayed score
    for c in range(3):
        idx = (labels == c).nonzero().squeeze(1)
        dets, keep = soft_nms(boxes[idx], scores[idx], iou_threshold=0.3, sigma=0.5, min_score=0.05,
                              method='linear')
        expected += [(float(d[4]), int(idx[k]), c) for d, k in zip(dets, keep)]
    expected.sort(key=lambda t: (-t[0], t[1]))
    assert out_labels.tolist() == [c for _, _, c in expected]
    torch.testing.assert_close(out_scores, torch.tensor([s for s, _, _ in expected]))
    torch.testing.assert_close(out_boxes, boxes[[i for _, i, _ in expected]])
    assert (out_scores < scores[[i for _, i, _ in expected]]).any()  # decayed, not removed


DEFAULTS = dict(score_thr=0.02, nms_pre=1000, nms=dict(type='nms', iou_threshold=0.45), max_per_img=200)
NAN = float('nan')


@pytest.mark.parametrize('cfg, field, value', [
    (dict(score_thr=NAN), 'test_cfg.score_thr', 'nan'),
    (dict(score_thr=-0.1), 'test_cfg.score_thr', '-0.1'),
    (dict(score_thr='0.5'), 'test_cfg.score_thr', "'0.5'"),
    (dict(nms=dict(type='nms', iou_threshold=-1)), 'test_cfg.nms.iou_threshold', '-1'),
    (dict(nms=dict(type='nms', iou_threshold=NAN)), 'test_cfg.nms.iou_threshold', 'nan'),
    (dict(nms=dict(type='nms', iou_threshold=5)), 'test_cfg.nms.iou_threshold', '5'),
    (dict(nms=dict(type='soft_nms', iou_threshold=1.5)), 'test_cfg.nms.iou_threshold', '1.5'),
    (dict(nms=dict(type='soft_nms', min_score=NAN)), 'test_cfg.nms.min_score', 'nan'),
    (dict(nms=dict(type='soft_nms', min_score=-0.5)), 'test_cfg.nms.min_score', '-0.5'),
    (dict(nms=dict(type='soft_nms', method='gaussian', sigma=NAN)), 'test_cfg.nms.sigma', 'nan'),
    (dict(nms=dict(type=None)), 'test_cfg.nms.type', 'None'),
    (dict(max_per_img=NAN), 'test_cfg.max_per_img', 'nan'),
    (dict(max_per_img=10.0), 'test_cfg.max_per_img', '10.0'),
    (dict(max_per_class=True), 'test_cfg.max_per_class', 'True'),
    (dict(min_bbox_size=NAN), 'test_cfg.min_bbox_size', 'nan'),
    (dict(min_bbox_size=float('inf')), 'test_cfg.min_bbox_size', 'inf'),
    (dict(nms_pre=2.5), 'test_cfg.nms_pre', '2.5'),
    (dict(nms_pre='100'), 'test_cfg.nms_pre', "'100'"),
    (dict(nms_pre_per_class=None), 'test_cfg.nms_pre_per_class', 'None'),
    (dict(nms='nms'), 'test_cfg.nms', "'nms'"),
])
def test_every_field_is_validated_naming_field_and_value(cfg, field, value):
    with pytest.raises(ValueError) as err:
        TestConfig.from_cfg(cfg, DEFAULTS)
    message = str(err.value)
    assert '\n' not in message and f'{field} ' in message and value in message


def test_direct_construction_is_validated_too():
    with pytest.raises(ValueError, match=r'test_cfg\.nms\.iou_threshold .*nan'):
        NMSConfig(iou_threshold=NAN)
    with pytest.raises(ValueError, match=r"test_cfg\.nms_pre .*'100'"):
        TestConfig(nms_pre='100')


def test_valid_edge_values_keep_their_meaning():
    """``<= 0`` counts mean "all", a negative ``min_bbox_size`` keeps empty boxes, ints pass as floats."""
    cfg = TestConfig.from_cfg(dict(score_thr=0, nms_pre=-1, nms_pre_per_class=0, max_per_class=-1, max_per_img=0,
                                   min_bbox_size=-1, nms=dict(type='nms', iou_threshold=1)), DEFAULTS)
    assert (cfg.nms_pre, cfg.max_per_img, cfg.min_bbox_size, cfg.nms.iou_threshold) == (-1, 0, -1, 1)
    assert TestConfig.from_cfg(dict(nms=dict(type='nms', iou_threshold=0)), DEFAULTS).nms.iou_threshold == 0
    boxes, scores, labels = candidates(n=50, classes=2)
    kept = multiclass_nms(boxes, scores, labels, cfg.nms, cfg.max_per_class, cfg.max_per_img)[0]
    assert len(kept) == 50  # IoU threshold 1 suppresses nothing; no caps


def test_every_shipped_config_test_cfg_validates():
    configs = Path(__file__).resolve().parents[3] / 'configs'
    names = sorted(p for p in configs.rglob('*.py') if '_base_' not in p.parts)
    assert len(names) >= 17
    for name in names:
        model = load_config(name).model
        head = MODELS.get(model.bbox_head.type)
        cfg = TestConfig.from_cfg(model.get('test_cfg'), head.default_test_cfg)
        assert 0 <= cfg.score_thr < 1 and 0 <= cfg.nms.iou_threshold <= 1, name


def test_building_a_detector_validates_its_test_cfg():
    model = load_config(Path(__file__).resolve().parents[3] / 'configs/quickstart/ssd_shapes.py').model
    model.test_cfg['nms'] = dict(type='nms', iou_threshold=float('nan'))
    with pytest.raises(ValueError, match=r'^test_cfg\.nms\.iou_threshold must be in \[0, 1\], got nan$'):
        MODELS.build(model)
