import pytest
import torch
from torchvision.models.vgg import cfgs, make_layers

from detkit.models.backbones import SSDVGG, L2Norm
from detkit.registry import MODELS


def test_ssd300_feature_maps():
    # narrow channels keep the test fast; the spatial layout is the same as VGG16's
    vgg = MODELS.build(dict(type='SSDVGG', widen_factor=0.25))
    assert vgg.out_channels == (128, 256)
    c4, fc7 = vgg(torch.zeros(1, 3, 300, 300))
    assert c4.shape == (1, 128, 38, 38)  # ceil-mode pool3: 75 -> 38
    assert fc7.shape == (1, 256, 19, 19)  # pool5 3x3 stride 1 keeps 19x19
    assert SSDVGG(widen_factor=0.25)(torch.zeros(1, 3, 512, 512))[1].shape[-2:] == (32, 32)


def test_full_width_layout():
    vgg = SSDVGG()
    assert vgg.out_channels == (512, 1024)
    fc6, fc7 = vgg.features[31], vgg.features[33]
    assert (fc6.in_channels, fc6.out_channels, fc6.kernel_size, fc6.dilation, fc6.padding) == \
        (512, 1024, (3, 3), (6, 6), (6, 6))
    assert (fc7.out_channels, fc7.kernel_size) == (1024, (1, 1))
    pool3, pool5 = vgg.features[16], vgg.features[30]
    assert pool3.ceil_mode and (pool5.kernel_size, pool5.stride, pool5.padding) == (3, 1, 1)
    assert torch.equal(vgg.l2_norm.weight, torch.full((512,), 20.0))


def test_l2norm_scales_unit_vectors():
    norm = L2Norm(4, scale=20.0)
    x = torch.randn(2, 4, 3, 3) * 7
    y = norm(x)
    torch.testing.assert_close(y.norm(dim=1), torch.full((2, 3, 3), 20.0))
    torch.testing.assert_close(y / 20, x / x.norm(dim=1, keepdim=True))


def test_loads_torchvision_vgg16_weights(tmp_path):
    # torchvision's vgg16().features (the classifier cannot become fc6/fc7 and is ignored)
    torch.manual_seed(0)
    tv_features = make_layers(cfgs['D'])
    path = tmp_path / 'vgg16.pth'
    torch.save({f'features.{k}': v for k, v in tv_features.state_dict().items()}
               | {'classifier.0.weight': torch.zeros(1)}, path)
    vgg = MODELS.build(dict(type='SSDVGG', init_cfg=dict(type='Pretrained', checkpoint=str(path)),
                            l2_norm_scale=None, out_indices=(22,)))
    for k, v in tv_features.state_dict().items():
        assert torch.equal(vgg.state_dict()[f'features.{k}'], v), k
    # conv4_3 computed by torchvision's layers (with SSD's ceil-mode pool3) equals detkit's
    tv_features[16].ceil_mode = True
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(vgg(x)[0], tv_features[:23](x))


def test_missing_weight_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        SSDVGG(pretrained=str(tmp_path / 'nothing.pth'))


def test_bad_out_indices():
    with pytest.raises(ValueError, match='out_indices'):
        SSDVGG(out_indices=(34, 22))
