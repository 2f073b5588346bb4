import pytest
import torch
import torchvision

from detkit.models.backbones import ResNet
from detkit.models.utils import convert_torchvision_resnet
from detkit.registry import MODELS


@pytest.fixture(scope='module')
def tv_resnet50_file(tmp_path_factory):
    """A randomly initialised torchvision resnet50 and its weight file (random BN statistics too)."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet50()
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # make batch norms non-trivial so that a wrong mapping shows
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    path = tmp_path_factory.mktemp('weights') / 'resnet50.pth'
    torch.save(tv.state_dict(), path)
    return tv.eval(), str(path)


def test_resnet50_matches_torchvision(tv_resnet50_file):
    tv, path = tv_resnet50_file
    r50 = MODELS.build(dict(type='ResNet', depth=50, pretrained=path)).eval()
    assert r50.out_channels == (256, 512, 1024, 2048)
    assert sum(p.numel() for p in r50.parameters()) == sum(
        p.numel() for n, p in tv.named_parameters() if not n.startswith('fc.'))
    x = torch.randn(1, 3, 64, 64)
    outs = r50(x)
    with torch.no_grad():
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for i, layer in enumerate((tv.layer1, tv.layer2, tv.layer3, tv.layer4)):
            y = layer(y)
            torch.testing.assert_close(outs[i], y, rtol=1e-4, atol=1e-5)


def test_nvidia_ssd300_layout(tv_resnet50_file):
    tv, path = tv_resnet50_file
    r50 = ResNet(depth=50, num_stages=3, strides=(1, 2, 1), out_indices=(2,), pretrained=path).eval()
    assert r50.out_channels == (1024,) and not hasattr(r50, 'layer4')
    block = r50.layer3[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (1, 1) and block.downsample[0].stride == (1, 1)
    x = torch.randn(1, 3, 300, 300)
    (out,) = r50(x)
    assert out.shape == (1, 1024, 38, 38)
    # the same computation with torchvision's modules, stride patched as NVIDIA does
    tv.layer3[0].conv2.stride = (1, 1)
    tv.layer3[0].downsample[0].stride = (1, 1)
    with torch.no_grad():
        y = tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x)))))))
    tv.layer3[0].conv2.stride = (2, 2)
    tv.layer3[0].downsample[0].stride = (2, 2)
    torch.testing.assert_close(out, y, rtol=1e-4, atol=1e-5)


def test_converter_keeps_stem_and_kept_stages_only(tv_resnet50_file):
    tv, _ = tv_resnet50_file
    converted = convert_torchvision_resnet(tv.state_dict(), num_stages=3)
    assert 'conv1.weight' in converted and 'layer3.5.bn3.running_var' in converted
    assert not any(k.startswith(('fc.', 'layer4.')) for k in converted)
    with pytest.raises(ValueError, match='resnet'):
        convert_torchvision_resnet({'foo': torch.zeros(1)})


def test_frozen_stages_and_norm_eval():
    r = ResNet(depth=18, frozen_stages=1, norm_eval=True)
    r.train()
    assert not any(p.requires_grad for p in r.conv1.parameters())
    assert not any(p.requires_grad for p in r.layer1.parameters())
    assert all(p.requires_grad for p in r.layer2.parameters())
    assert not any(m.training for m in r.modules() if isinstance(m, torch.nn.BatchNorm2d))
    r2 = ResNet(depth=18, frozen_stages=0).train()
    assert not r2.bn1.training and r2.layer1[0].bn1.training


def test_base_channels_scales_every_width_of_torchvision_resnet18():
    half = ResNet(depth=18, base_channels=32)
    assert half.out_channels == (32, 64, 128, 256)
    tv_shapes = {n: p.shape for n, p in torchvision.models.resnet18().named_parameters() if not n.startswith('fc.')}
    ours = dict(half.named_parameters())
    assert set(ours) == set(tv_shapes)
    for name, shape in tv_shapes.items():
        # every channel dimension halves; the RGB input and the kernel sizes stay
        expected = tuple(d if (i == 1 and d == 3) or i >= 2 else d // 2 for i, d in enumerate(shape))
        assert tuple(ours[name].shape) == expected, name
    outs = half(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 16, 16), (2, 64, 8, 8), (2, 128, 4, 4), (2, 256, 2, 2)]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='depth'):
        ResNet(depth=42)
    with pytest.raises(ValueError, match='base_channels'):
        ResNet(depth=18, base_channels=0)
    with pytest.raises(ValueError, match='strides'):
        ResNet(num_stages=3, strides=(1, 2, 2, 2))
    with pytest.raises(ValueError, match='out_indices'):
        ResNet(num_stages=3, strides=(1, 2, 1), out_indices=(3,))


def _damaged_files(tmp_path):
    good = tmp_path / 'r18.pth'
    torch.save(torchvision.models.resnet18().state_dict(), good)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(good.read_bytes()[:4096])

    class Payload:  # any pickled object: loading it would run code from the file
        def __reduce__(self):
            return (print, ('pwned',))

    pickled = tmp_path / 'pickled.pth'
    torch.save({'conv1.weight': torch.zeros(1), 'evil': Payload()}, pickled)
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(bytes(range(256)) * 40)
    return truncated, pickled, junk


@pytest.mark.parametrize('how', ['pretrained', 'init_cfg'])
def test_damaged_pretrained_files_get_the_checkpoint_errors(tmp_path, how):
    from detkit.engine.checkpoint import CheckpointError
    truncated, pickled, junk = _damaged_files(tmp_path)

    def build(path):
        arg = dict(pretrained=str(path)) if how == 'pretrained' else dict(init_cfg=dict(type='Pretrained',
                                                                                         checkpoint=str(path)))
        return ResNet(depth=18, **arg)

    for path, what in ((truncated, 'truncated or corrupt'), (junk, 'truncated or corrupt'),
                       (pickled, 'pickled Python objects')):
        with pytest.raises(CheckpointError, match=rf'{path.name}.*{what}') as err:
            build(path)
        assert 'weights_only' not in str(err.value)  # never advise loading unsafely
