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


# ------------------------------------------------------------- issue 17 item 7: pretrained= files that do not cover
def test_resnet18_file_into_resnet34_is_an_error_naming_the_file_and_the_missing_weights(tmp_path):
    path = tmp_path / 'resnet18.pth'
    torch.save(MODELS.build(dict(type='ResNet', depth=18, base_channels=8)).state_dict(), path)
    r34_keys = set(MODELS.build(dict(type='ResNet', depth=34, base_channels=8)).state_dict())
    r18_keys = set(torch.load(path, weights_only=True))
    missing = {k for k in r34_keys - r18_keys if not k.endswith('num_batches_tracked')}
    assert len(missing) == 80  # 8 more BasicBlocks (3-2, 4-2, 6-2, 3-2) of 2 convs and 2 batch norms (4 tensors)
    with pytest.raises(ValueError) as err:
        MODELS.build(dict(type='ResNet', depth=34, base_channels=8, pretrained=str(path)))
    msg = str(err.value)
    assert str(path) in msg and 'ResNet(depth=34)' in msg
    assert f'80 of {len(r34_keys) - sum(k.endswith("num_batches_tracked") for k in r34_keys)} weights are not in ' \
           'the file' in msg
    assert "'layer1.2.conv1.weight'" in msg


def test_a_file_holding_only_conv1_is_an_error(tmp_path):
    path = tmp_path / 'conv1_only.pth'
    state = MODELS.build(dict(type='ResNet', depth=18, base_channels=8)).state_dict()
    torch.save({'conv1.weight': state['conv1.weight']}, path)
    with pytest.raises(ValueError, match=r"conv1_only\.pth does not fit ResNet\(depth=18\).*are not in the file "
                                         r"\(\['bn1\.weight'"):
        MODELS.build(dict(type='ResNet', depth=18, base_channels=8, init_cfg=dict(type='Pretrained',
                                                                                   checkpoint=str(path))))


def test_keys_torchvision_files_carry_and_weights_they_cannot_hold_are_allowed(tmp_path):
    """A torchvision file's fc.* (and old files' missing num_batches_tracked) are fine for ResNet; a VGG16 file
    holds conv1_1 .. conv5_3 only: SSDVGG's fc6/fc7 and L2Norm keep their initialisation, conv5_3 may not miss."""
    torch.manual_seed(0)
    source = MODELS.build(dict(type='ResNet', depth=18, base_channels=8)).state_dict()
    tv_like = {k: v for k, v in source.items() if not k.endswith('num_batches_tracked')}
    tv_like.update({'fc.weight': torch.zeros(10, 64), 'fc.bias': torch.zeros(10)})
    torch.save(tv_like, tmp_path / 'resnet18_tv.pth')
    torch.manual_seed(1)
    loaded = MODELS.build(dict(type='ResNet', depth=18, base_channels=8, pretrained=str(tmp_path / 'resnet18_tv.pth')))
    for k, v in loaded.state_dict().items():
        if not k.endswith('num_batches_tracked'):
            assert torch.equal(v, source[k]), k

    vgg = MODELS.build(dict(type='SSDVGG', widen_factor=0.125)).state_dict()
    features = {k: v for k, v in vgg.items() if k.startswith('features.') and int(k.split('.')[1]) <= 28}
    torch.save({**features, 'classifier.0.weight': torch.zeros(2, 2)}, tmp_path / 'vgg16.pth')
    torch.manual_seed(2)
    ssd_vgg = MODELS.build(dict(type='SSDVGG', widen_factor=0.125, pretrained=str(tmp_path / 'vgg16.pth')))
    assert torch.equal(ssd_vgg.state_dict()['features.28.weight'], vgg['features.28.weight'])
    assert not torch.equal(ssd_vgg.state_dict()['features.31.weight'], vgg['features.31.weight'])  # fc6: init
    del features['features.28.weight'], features['features.28.bias']
    torch.save(features, tmp_path / 'vgg16_cut.pth')
    with pytest.raises(ValueError, match=r"vgg16_cut\.pth does not fit SSDVGG: 2 of 26 weights are not in the file "
                                         r"\(\['features\.28\.weight', 'features\.28\.bias'\]\)"):
        MODELS.build(dict(type='SSDVGG', widen_factor=0.125, pretrained=str(tmp_path / 'vgg16_cut.pth')))
