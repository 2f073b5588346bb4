"""Swapping backbones with --cfg-options-style overrides only: what fits trains, what cannot fit fails at build time
naming the mismatch and what would fit."""
from pathlib import Path

import pytest
import torch

from detkit.registry import MODELS
from detkit.utils import load_config

CONFIGS = Path(__file__).resolve().parents[3] / 'configs'


def one_step(model, size: int) -> dict:
    images = torch.randn(2, 3, size, size)
    targets = [{'boxes': torch.tensor([[10., 12., 90., 80.], [40., 50., 120., 126.]]),
                'labels': torch.tensor([1, 2])}] * 2
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    losses = model.loss(images, targets)
    total = sum(losses.values())
    opt.zero_grad()
    total.backward()
    opt.step()
    assert torch.isfinite(total)
    return losses


def test_ssd300_with_resnet50_trains():
    cfg = load_config(CONFIGS / 'ssd/ssd300_voc0712.py', {
        'model.backbone': dict(_delete_=True, type='ResNet', depth=50, out_indices=(1, 2))})
    model = MODELS.build(cfg.model)
    assert model.backbone.out_strides == (8, 16) and model.neck.in_channels == (512, 1024)
    one_step(model, 300)


def test_ssd300_with_resnet50_at_the_wrong_strides_fails_at_build():
    # the example: layer3 + layer4 are strides 16 and 32, so the extra layers run out of pixels
    cfg = load_config(CONFIGS / 'ssd/ssd300_voc0712.py', {
        'model.backbone': dict(_delete_=True, type='ResNet', depth=50, out_indices=(2, 3))})
    with pytest.raises(ValueError) as err:
        MODELS.build(cfg.model)
    msg = str(err.value)
    assert 'SSDNeck cannot run on the outputs of ResNet' in msg and 'output strides (16, 32)' in msg
    assert '(38, 38)' in msg and 'strides [8, 16, 32, 64, 100, 300]' in msg
    assert 'out_indices=(1, 2) would give the strides (8, 16)' in msg


def test_retinanet_with_mobilenetv2_trains():
    cfg = load_config(CONFIGS / 'retinanet/retinanet_r50_fpn_1x_coco.py', {
        'model.backbone': dict(_delete_=True, type='MobileNetV2', out_indices=(1, 2, 4, 7))})
    model = MODELS.build(cfg.model)
    assert model.neck.in_channels == (24, 32, 96, 1280)  # filled from the backbone: no channel in the override
    losses = one_step(model, 128)
    assert losses['loss_bbox'] > 0


def test_retinanet_with_mobilenetv2_at_the_wrong_strides_fails_at_build():
    cfg = load_config(CONFIGS / 'retinanet/retinanet_r50_fpn_1x_coco.py', {
        'model.backbone': dict(_delete_=True, type='MobileNetV2', out_indices=(2, 4, 7))})
    with pytest.raises(ValueError) as err:
        MODELS.build(cfg.model)
    msg = str(err.value)
    # FPN from start_level 1 gets strides 16 and 32, its extra levels 64..256: every level 2x too coarse
    assert 'strides about [16, 32, 64, 128, 256]' in msg and 'strides [8, 16, 32, 64, 128]' in msg
    assert 'out_indices=(1, 2, 4) would give the strides (4, 8, 16)' in msg


def test_quickstart_with_mobilenetv2_names_the_backbone_strides_not_the_input_size():
    cfg = load_config(CONFIGS / 'quickstart/ssd_shapes.py', {
        'model.backbone': dict(_delete_=True, type='MobileNetV2', widen_factor=0.5, out_indices=(1, 2, 3))})
    with pytest.raises(ValueError) as err:
        MODELS.build(cfg.model)
    msg = str(err.value)
    assert 'MobileNetV2 (out_indices=(1, 2, 3), output strides (4, 8, 16)' in msg
    assert 'out_indices=(2, 4, 7) would give the strides (8, 16, 32)' in msg
    assert 'Resize' not in msg  # the input size is right; the backbone is not
    cfg = load_config(CONFIGS / 'quickstart/ssd_shapes.py', {
        'model.backbone': dict(_delete_=True, type='MobileNetV2', widen_factor=0.5, out_indices=(2, 4, 7))})
    one_step(MODELS.build(cfg.model), 192)


def test_level_count_mismatch_is_named():
    cfg = load_config(CONFIGS / 'retinanet/retinanet_r50_fpn_1x_coco.py', {'model.neck.num_outs': 4})
    with pytest.raises(ValueError, match='anchor generator has 5 levels'):
        MODELS.build(cfg.model)
