"""torchvision -> detkit weight conversion: torchvision's ssd300_vgg16 weights give identical raw outputs."""
from pathlib import Path

import pytest
import torch

from detkit.models.heads.ssd_head import flatten_levels
from detkit.models.utils import convert_torchvision_ssd300_vgg16
from detkit.registry import MODELS
from detkit.utils import load_config

CONFIG = Path(__file__).resolve().parents[3] / 'configs' / 'ssd' / 'ssd300_voc0712.py'


@pytest.fixture(scope='module')
def models(torchvision_ssd300):
    tv = torchvision_ssd300(21)
    ours = MODELS.build(load_config(CONFIG).model).eval()
    ours.load_state_dict(convert_torchvision_ssd300_vgg16(tv.state_dict()), strict=True)
    return tv, ours


def test_identical_raw_outputs(models):
    tv, ours = models
    x = torch.randn(1, 3, 300, 300)
    with torch.no_grad():
        cls_scores, bbox_preds = ours(x)
        theirs = tv.head(list(tv.backbone(x).values()))
    ours_cls = flatten_levels(cls_scores, 21)  # (N, 8732, 21), background last
    ours_reg = flatten_levels(bbox_preds, 4)
    theirs_cls = theirs['cls_logits']  # (N, 8732, 21), background first
    torch.testing.assert_close(ours_cls[..., :20], theirs_cls[..., 1:], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours_cls[..., 20], theirs_cls[..., 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours_reg, theirs['bbox_regression'], rtol=1e-4, atol=1e-4)
    # and the outputs are not trivially equal (e.g. all zeros)
    assert ours_cls.std() > 0.1


def test_converted_model_trains_and_predicts(models):
    _, ours = models
    x = torch.randn(1, 3, 300, 300)
    targets = [{'boxes': torch.tensor([[150., 40., 290., 280.], [0., 0., 30., 30.]]), 'labels': torch.tensor([0, 19])}]
    ours.train()
    losses = ours.loss(x, targets)
    assert torch.isfinite(losses['loss_cls']) and losses['loss_bbox'] > 0
    ours.eval()
    metas = [{'ori_shape': (600, 450), 'img_shape': (300, 300), 'scale_factor': (300 / 450, 0.5)}]
    (result,) = ours.predict(x, metas)
    assert len(result['boxes']) <= 200 and ((result['labels'] >= 0) & (result['labels'] < 20)).all()
    assert (result['boxes'][:, 2] <= 450).all() and (result['boxes'][:, 3] <= 600).all()


def test_unknown_keys_are_refused():
    with pytest.raises(ValueError, match='unexpected key'):
        convert_torchvision_ssd300_vgg16({'backbone.mystery.weight': torch.zeros(1)})


def test_converter_script(tmp_path, torchvision_ssd300):
    import runpy
    import sys

    src, dst = tmp_path / 'tv.pth', tmp_path / 'detkit.pth'
    torch.save(torchvision_ssd300(21).state_dict(), src)
    script = Path(__file__).resolve().parents[3] / 'tools' / 'model_converters' / 'torchvision_to_detkit.py'
    argv = sys.argv
    try:
        sys.argv = [str(script), 'ssd300_vgg16', str(src), str(dst)]
        runpy.run_path(str(script), run_name='__main__')
    finally:
        sys.argv = argv
    state = torch.load(dst, weights_only=True)['state_dict']
    assert state['bbox_head.cls_convs.0.weight'].shape == (4 * 21, 512, 3, 3)
    assert 'backbone.l2_norm.weight' in state


# ------------------------------------------------------------------------------- torchvision://NAME (item 4)
def torchvision_file_name(name: str) -> str:
    """The file name torchvision downloads NAME's ImageNet weights to (read from its URL, no network)."""
    import os

    import torchvision

    return os.path.basename(torchvision.models.get_model_weights(name).IMAGENET1K_V1.url)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache ($TORCH_HOME) for the test."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    checkpoints = tmp_path / 'torch_home' / 'hub' / 'checkpoints'
    checkpoints.mkdir(parents=True)
    return checkpoints


@pytest.mark.parametrize('name, backbone, tv_key, our_key', [
    ('resnet18', dict(type='ResNet', depth=18), 'layer4.1.conv2.weight', 'layer4.1.conv2.weight'),
    ('vgg16', dict(type='SSDVGG'), 'features.28.weight', 'features.28.weight'),  # conv5_3
    ('mobilenet_v2', dict(type='MobileNetV2', out_indices=(4, 7)), 'features.18.0.weight', 'conv2.conv.weight'),
])
def test_torchvision_uri_loads_from_the_hub_cache(torch_home, name, backbone, tv_key, our_key):
    """A torchvision state dict saved where torchvision would download it loads through 'torchvision://NAME'."""
    import torchvision

    torch.manual_seed(0)
    tv_state = getattr(torchvision.models, name)().state_dict()
    assert torchvision_file_name(name).startswith(name + '-')
    torch.save(tv_state, torch_home / torchvision_file_name(name))
    model = MODELS.build(dict(backbone, init_cfg=dict(type='Pretrained', checkpoint=f'torchvision://{name}')))
    assert torch.equal(model.state_dict()[our_key], tv_state[tv_key])
    model = MODELS.build(dict(backbone, pretrained=f'torchvision://{name}'))  # the same spelling for pretrained=
    assert torch.equal(model.state_dict()[our_key], tv_state[tv_key])


def test_missing_torchvision_file_says_what_to_put_where(torch_home):
    import re

    path = torch_home / 'resnet50-0676ba61.pth'
    url = 'https://download.pytorch.org/models/resnet50-0676ba61.pth'
    assert torchvision_file_name('resnet50') == path.name
    with pytest.raises(FileNotFoundError) as info:
        MODELS.build(dict(type='ResNet', depth=50,
                          init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')))
    message = str(info.value)
    assert url in message and str(path) in message and 'pretrained=PATH' in message
    assert re.search('never downloads', message)


def test_torchvision_uri_of_another_network_is_refused(torch_home):
    from detkit.models.utils.weights import torchvision_weight_path

    with pytest.raises(ValueError, match=r"ResNet\(depth=50\).*torchvision://resnet18.*torchvision://resnet50"):
        MODELS.build(dict(type='ResNet', depth=50, pretrained='torchvision://resnet18'))
    with pytest.raises(ValueError, match='torchvision://vgg16'):
        MODELS.build(dict(type='SSDVGG', pretrained='torchvision://mobilenet_v2'))
    with pytest.raises(ValueError, match="'torchvision://resnext50'"):
        torchvision_weight_path('torchvision://resnext50')
