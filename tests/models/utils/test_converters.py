"""Official M2Det and mmdetection 3.x checkpoints -> detkit: every published key maps onto the detkit model with its
shape, nothing is left over on either side, and the converted files load through init_detector.

The published layouts are written here from the public model code (VDIGPKU/M2Det ``m2det.py`` and
``layers/nn_utils.py``; mmdetection 3.x ``ssd_vgg.py``, ``ssd_neck.py``, ``ssd_head.py``, ``mobilenet_v2.py``,
``layers/inverted_residual.py``, ``fpn.py``, ``retina_head.py`` and their configs), independently of detkit's
modules. Each fake checkpoint tensor is a distinct constant broadcast to its published shape (no memory for the
132M M2Det weights), so a key that lands in the wrong place shows by its value.
"""
from __future__ import annotations

import contextlib
import io
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from detkit.apis import init_detector
from detkit.models.utils.converters import check_fits, convert_m2det_official, convert_mmdet
from detkit.registry import MODELS
from detkit.utils import load_config

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / 'configs'
TOOLS = REPO / 'tools' / 'model_converters'
VGG16 = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'C', 512, 512, 512, 'M', 512, 512, 512)


# ------------------------------------------------------------------------------------------------------- helpers
def fake_state(layout: dict[str, tuple[int, ...]], prefix: str = '') -> dict[str, torch.Tensor]:
    """One distinct constant per key, broadcast (stride 0) to the key's shape; batch norm counters are int64."""
    out = {}
    for i, (key, shape) in enumerate(layout.items()):
        if key.endswith('num_batches_tracked'):
            out[prefix + key] = torch.tensor(i, dtype=torch.long)
        else:
            out[prefix + key] = torch.tensor(float(i)).expand(shape)
    return out


def model_layout(config: str, **options) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the model a detkit config builds (on the meta device: no memory, no init)."""
    cfg = load_config(CONFIGS / config, options or None)
    with torch.device('meta'):
        model = MODELS.build(dict(cfg.model, check_input_size=False))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def assert_maps_exactly(converted: dict[str, torch.Tensor], layout: dict[str, tuple[int, ...]]) -> None:
    """Every model key is produced with its shape, and nothing else."""
    assert sorted(converted) == sorted(layout), (sorted(set(layout) - set(converted))[:5],
                                                 sorted(set(converted) - set(layout))[:5])
    wrong = {k: (tuple(v.shape), layout[k]) for k, v in converted.items() if tuple(v.shape) != layout[k]}
    assert not wrong, list(wrong.items())[:5]


def basic_conv(layout: dict, prefix: str, cin: int, cout: int, k: int, groups: int = 1, bias: bool = False) -> None:
    """A conv + batch norm pair (M2Det's BasicConv, mmcv's ConvModule with BN): ``conv.weight``, ``bn.*``."""
    layout[f'{prefix}.conv.weight'] = (cout, cin // groups, k, k)
    if bias:
        layout[f'{prefix}.conv.bias'] = (cout,)
    for name in ('weight', 'bias', 'running_mean', 'running_var'):
        layout[f'{prefix}.bn.{name}'] = (cout,)
    layout[f'{prefix}.bn.num_batches_tracked'] = ()


def vgg16_layout(layout: dict, prefix: str) -> None:
    """VGG16 conv1_1 .. conv5_3 (a ReLU after each conv, a pool per 'M'/'C'), then pool5, fc6, ReLU, fc7 at 30-33."""
    i, cin = 0, 3
    for v in VGG16:
        if v in ('M', 'C'):
            i += 1
            continue
        layout[f'{prefix}.{i}.weight'], layout[f'{prefix}.{i}.bias'] = (v, cin, 3, 3), (v,)
        cin, i = v, i + 2
    assert i == 30  # pool5 at 30
    layout[f'{prefix}.31.weight'], layout[f'{prefix}.31.bias'] = (1024, 512, 3, 3), (1024,)  # fc6, dilated
    layout[f'{prefix}.33.weight'], layout[f'{prefix}.33.bias'] = (1024, 1024, 1, 1), (1024,)  # fc7


# --------------------------------------------------------------------------------------------- official M2Det
def official_m2det_layout(num_classes: int = 81, sfam: bool = False, batch_counters: bool = True,
                          planes: int = 256, num_levels: int = 8, num_scales: int = 6) -> dict[str, tuple[int, ...]]:
    """``M2Det(phase, size, config).state_dict()`` shapes of the official VGG16 model (m2det.py, nn_utils.py)."""
    layout: dict[str, tuple[int, ...]] = {}
    # M2Det.construct_modules: TUMs first, then base, reduce, up_reduce, Norm, leach, loc/conf, sfam
    for level in range(num_levels):
        # TUM(first_level, input_planes=planes // 2, side_channel=planes): in1 = 128 (first) or 128 + 256
        in1 = planes // 2 + (planes if level else 0)
        p = f'unet{level + 1}'
        basic_conv(layout, f'{p}.layers.0', in1, planes, 3)
        for j in range(1, num_scales - 1):
            basic_conv(layout, f'{p}.layers.{j}', planes, planes, 3)
        basic_conv(layout, f'{p}.toplayer.0', planes, planes, 1)
        for j in range(num_scales - 2):
            basic_conv(layout, f'{p}.latlayer.{j}', planes, planes, 3)
        basic_conv(layout, f'{p}.latlayer.{num_scales - 2}', in1, planes, 3)
        for j in range(num_scales - 1):
            basic_conv(layout, f'{p}.smooth.{j}', planes, planes, 1)
    vgg16_layout(layout, 'base')
    basic_conv(layout, 'reduce', 512, 256, 3)
    basic_conv(layout, 'up_reduce', 1024, 512, 1)
    channels = planes * num_levels
    for name in ('weight', 'bias', 'running_mean', 'running_var'):
        layout[f'Norm.{name}'] = (channels,)
    layout['Norm.num_batches_tracked'] = ()
    for level in range(num_levels):  # [BasicConv(...)] * num_levels: one module saved under every index
        basic_conv(layout, f'leach.{level}', 256 + 512, planes // 2, 1)
    for s in range(num_scales):
        layout[f'loc.{s}.weight'], layout[f'loc.{s}.bias'] = (4 * 6, channels, 3, 3), (4 * 6,)
        layout[f'conf.{s}.weight'], layout[f'conf.{s}.bias'] = (num_classes * 6, channels, 3, 3), (num_classes * 6,)
    if sfam:
        for s in range(num_scales):
            layout[f'sfam_module.fc1.{s}.weight'] = (channels // 16, channels, 1, 1)
            layout[f'sfam_module.fc1.{s}.bias'] = (channels // 16,)
            layout[f'sfam_module.fc2.{s}.weight'] = (channels, channels // 16, 1, 1)
            layout[f'sfam_module.fc2.{s}.bias'] = (channels,)
    if not batch_counters:  # checkpoints saved before PyTorch 0.4.1
        layout = {k: v for k, v in layout.items() if not k.endswith('num_batches_tracked')}
    return layout


def official_m2det_state(**kwargs) -> dict[str, torch.Tensor]:
    """A fake official checkpoint: shared modules repeat the same tensors under every index, as the real ones."""
    state = fake_state(official_m2det_layout(**kwargs))
    for key in list(state):
        m = re.fullmatch(r'(leach|sfam_module\.fc[12])\.(\d+)\.(.+)', key)
        if m and m.group(2) != '0':
            state[key] = state[f'{m.group(1)}.0.{m.group(3)}']
    for key in [k for k in state if k.startswith('conf.')]:  # distinct output channels, to follow the rotation
        shape = state[key].shape
        state[key] = torch.arange(float(shape[0])).view(-1, *[1] * (len(shape) - 1)).expand(shape)
    return state


def m2det_detkit_key(key: str) -> str:
    """The published correspondence of the official module names with detkit's (REFERENCE.md, issue 11)."""
    key = re.sub(r'^unet(\d+)\.', lambda m: f'neck.tums.{int(m.group(1)) - 1}.', key)
    for old, new in (('base.', 'backbone.features.'), ('reduce.', 'neck.reduce.'), ('up_reduce.', 'neck.up_reduce.'),
                     ('leach.', 'neck.leach.'), ('Norm.', 'neck.norm.'), ('sfam_module.', 'neck.sfam.'),
                     ('loc.', 'bbox_head.reg_convs.'), ('conf.', 'bbox_head.cls_convs.')):
        if key.startswith(old):
            return new + key[len(old):]
    return key


@pytest.mark.parametrize('config, options, layout_args', [
    ('m2det/m2det320_vgg_coco.py', {}, {}),
    ('m2det/m2det512_vgg_coco.py', {}, {}),
    ('m2det/m2det320_vgg_coco.py', {'model.neck.sfam': True}, {'sfam': True}),
    ('m2det/m2det512_vgg_voc0712.py', {}, {'num_classes': 21, 'batch_counters': False}),
])
def test_official_m2det_keys_map_exactly(config, options, layout_args):
    official = official_m2det_state(**layout_args)
    converted = convert_m2det_official(official)
    assert_maps_exactly(converted, model_layout(config, **options))
    for key, value in official.items():
        if not key.startswith('conf.') and not key.endswith('num_batches_tracked'):
            assert torch.equal(converted[m2det_detkit_key(key)], value), key


def test_official_m2det_background_moves_last():
    official = official_m2det_state()
    converted = convert_m2det_official(official)
    # anchor a's official channels a * 81 + 0 (background), + 1 .. + 80 (COCO classes) -> detkit a * 81 + 80, + 0 ..
    for key in ('conf.0.weight', 'conf.5.bias'):
        ours = converted[m2det_detkit_key(key)].reshape(486, -1)[:, 0].reshape(6, 81)
        theirs = official[key].reshape(486, -1)[:, 0].reshape(6, 81)
        assert torch.equal(ours[:, :80], theirs[:, 1:]) and torch.equal(ours[:, 80], theirs[:, 0])


def test_official_m2det_copies_of_the_shared_conv_must_agree():
    official = official_m2det_state()
    official['leach.3.conv.weight'] = official['leach.3.conv.weight'] + 1.0
    with pytest.raises(ValueError, match=r"'leach.3.conv.weight' differs from 'leach.0.conv.weight'.*leach"):
        convert_m2det_official(official)
    official = official_m2det_state(sfam=True)
    official['sfam_module.fc2.4.bias'] = torch.zeros(2048)
    with pytest.raises(ValueError, match=r"'sfam_module.fc2.4.bias' differs from 'sfam_module.fc2.0.bias'"):
        convert_m2det_official(official)


def test_official_m2det_unknown_keys_are_named():
    with pytest.raises(ValueError, match=r"'base.conv1.weight'.*VGG16"):  # the official ResNet variants
        convert_m2det_official({'base.conv1.weight': torch.zeros(64, 3, 7, 7)})
    with pytest.raises(ValueError, match="'conf.0.weight' has no matching 'loc.0.weight'"):
        convert_m2det_official({'conf.0.weight': torch.zeros(486, 2048, 3, 3)})


def test_official_m2det_cli_and_init_detector(tmp_path):
    """An official 21-class (VOC) M2Det512 checkpoint saved by DataParallel ('module.' prefix), converted by the
    CLI, loads with weights_only and through init_detector into configs/m2det/m2det512_vgg_voc0712.py."""
    src, dst = tmp_path / 'm2det512_vgg_voc.pth', tmp_path / 'detkit.pth'
    official = official_m2det_state(num_classes=21)
    torch.save(fake_state_prefixed(official, 'module.'), src)
    config = CONFIGS / 'm2det' / 'm2det512_vgg_voc0712.py'
    run_tool('m2det_to_detkit.py', src, dst, '--config', config)
    ckpt = torch.load(dst, weights_only=True)
    assert set(ckpt) == {'state_dict', 'meta'}
    model = init_detector(str(config), str(dst))
    ours = model.state_dict()
    for key, value in official.items():
        if not key.startswith('conf.') and not key.endswith('num_batches_tracked'):
            assert torch.equal(ours[m2det_detkit_key(key)], value), key
    assert model.neck.leach[0] is model.neck.leach[7]  # still one shared module after loading


def fake_state_prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def run_tool(script: str, *args) -> str:
    """Run a converter CLI as ``python tools/model_converters/SCRIPT ARGS`` does, in this process (a new
    interpreter would spend seconds importing torch again); returns what it printed."""
    argv, out = sys.argv, io.StringIO()
    try:
        sys.argv = [str(TOOLS / script), *map(str, args)]
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(TOOLS / script), run_name='__main__')
    finally:
        sys.argv = argv
    return out.getvalue()


# ------------------------------------------------------------------------------------------------ mmdetection
def mmdet_ssd_vgg_layout(input_size: int = 300, num_classes: int = 80) -> dict[str, tuple[int, ...]]:
    """mmdetection 3.x SSD300/512: SSDVGG (features), SSDNeck (l2_norm, extra_layers), SSDHead (one-conv
    Sequentials), from configs/_base_/models/ssd300.py and configs/ssd/ssd512_coco.py."""
    layout: dict[str, tuple[int, ...]] = {}
    vgg16_layout(layout, 'backbone.features')
    layout['neck.l2_norm.weight'] = (512,)
    if input_size == 300:
        out_channels, anchors = (512, 1024, 512, 256, 256, 256), (4, 6, 6, 6, 4, 4)
    else:
        out_channels, anchors = (512, 1024, 512, 256, 256, 256, 256), (4, 6, 6, 6, 6, 4, 4)
    extra = out_channels[2:]
    for i, out in enumerate(extra):
        k = 4 if input_size == 512 and i == len(extra) - 1 else 3  # last_kernel_size
        cin = out_channels[1 + i]
        layout[f'neck.extra_layers.{i}.0.conv.weight'], layout[f'neck.extra_layers.{i}.0.conv.bias'] = \
            (out // 2, cin, 1, 1), (out // 2,)
        layout[f'neck.extra_layers.{i}.1.conv.weight'], layout[f'neck.extra_layers.{i}.1.conv.bias'] = \
            (out, out // 2, k, k), (out,)
    for level, (ch, a) in enumerate(zip(out_channels, anchors)):
        layout[f'bbox_head.cls_convs.{level}.0.weight'] = (a * (num_classes + 1), ch, 3, 3)
        layout[f'bbox_head.cls_convs.{level}.0.bias'] = (a * (num_classes + 1),)
        layout[f'bbox_head.reg_convs.{level}.0.weight'], layout[f'bbox_head.reg_convs.{level}.0.bias'] = \
            (a * 4, ch, 3, 3), (a * 4,)
    return layout


def mmdet_ssdlite_layout(num_classes: int = 80) -> dict[str, tuple[int, ...]]:
    """mmdetection 3.x ssdlite_mobilenetv2-scratch_8xb24-600e_coco: MobileNetV2 (ConvModule conv1/conv2,
    InvertedResidual expand_conv/depthwise_conv/linear_conv), SSDNeck with depthwise-separable convs, SSDHead with
    use_depthwise (ConvModule + 1x1 conv)."""
    layout: dict[str, tuple[int, ...]] = {}
    basic_conv(layout, 'backbone.conv1', 3, 32, 3)
    cin = 32
    for s, (t, c, n, _) in enumerate(((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                                       (6, 160, 3, 2), (6, 320, 1, 1)), start=1):
        for j in range(n):
            mid, p = int(round(cin * t)), f'backbone.layer{s}.{j}'
            if t != 1:
                basic_conv(layout, f'{p}.expand_conv', cin, mid, 1)
            basic_conv(layout, f'{p}.depthwise_conv', mid, mid, 3, groups=mid)
            basic_conv(layout, f'{p}.linear_conv', mid, c, 1)
            cin = c
    basic_conv(layout, 'backbone.conv2', 320, 1280, 1)
    out_channels = (96, 1280, 512, 256, 256, 128)
    for i, out in enumerate(out_channels[2:]):
        cin, mid = out_channels[1 + i], out // 2
        basic_conv(layout, f'neck.extra_layers.{i}.0', cin, mid, 1)
        basic_conv(layout, f'neck.extra_layers.{i}.1.depthwise_conv', mid, mid, 3, groups=mid)
        basic_conv(layout, f'neck.extra_layers.{i}.1.pointwise_conv', mid, out, 1)
    for level, ch in enumerate(out_channels):
        for tower, outs in (('cls', 6 * (num_classes + 1)), ('reg', 6 * 4)):
            basic_conv(layout, f'bbox_head.{tower}_convs.{level}.0', ch, ch, 3, groups=ch)
            layout[f'bbox_head.{tower}_convs.{level}.1.weight'] = (outs, ch, 1, 1)
            layout[f'bbox_head.{tower}_convs.{level}.1.bias'] = (outs,)
    return layout


def mmdet_retinanet_layout(num_classes: int = 80) -> dict[str, tuple[int, ...]]:
    """mmdetection 3.x retinanet_r50_fpn: ResNet-50 (torchvision's names, as mmdetection's), FPN(start_level=1,
    add_extra_convs='on_input', 5 outputs), RetinaHead (4 + 4 ConvModules, retina_cls, retina_reg)."""
    layout = {f'backbone.{k}': tuple(v.shape) for k, v in torchvision.models.resnet50().state_dict().items()
              if not k.startswith('fc.')}
    for i, cin in enumerate((512, 1024, 2048)):
        layout[f'neck.lateral_convs.{i}.conv.weight'], layout[f'neck.lateral_convs.{i}.conv.bias'] = \
            (256, cin, 1, 1), (256,)
    for i, cin in enumerate((256, 256, 256, 2048, 256)):  # P3-P5 smoothing, P6 from C5, P7
        layout[f'neck.fpn_convs.{i}.conv.weight'], layout[f'neck.fpn_convs.{i}.conv.bias'] = \
            (256, cin, 3, 3), (256,)
    for tower in ('cls', 'reg'):
        for i in range(4):
            layout[f'bbox_head.{tower}_convs.{i}.conv.weight'] = (256, 256, 3, 3)
            layout[f'bbox_head.{tower}_convs.{i}.conv.bias'] = (256,)
    layout['bbox_head.retina_cls.weight'], layout['bbox_head.retina_cls.bias'] = (9 * num_classes, 256, 3, 3), \
        (9 * num_classes,)
    layout['bbox_head.retina_reg.weight'], layout['bbox_head.retina_reg.bias'] = (36, 256, 3, 3), (36,)
    return layout


def mmdet_detkit_key(key: str) -> str:
    """Where mmdetection's names differ from detkit's (issue 11): the rest keep their names."""
    if key == 'neck.l2_norm.weight':
        return 'backbone.l2_norm.weight'
    key = re.sub(r'^(bbox_head\.(?:cls|reg)_convs\.\d+)\.0\.(weight|bias)$', r'\1.\2', key)
    if key.startswith('neck.'):
        key = key.replace('.1.depthwise_conv.', '.1.0.').replace('.1.pointwise_conv.', '.1.1.')
    if m := re.match(r'^(backbone\.layer(\d)\.\d+)\.(expand|depthwise|linear)_conv\.(.+)$', key):
        order = ('depthwise', 'linear') if m.group(2) == '1' else ('expand', 'depthwise', 'linear')
        key = f'{m.group(1)}.conv.{order.index(m.group(3))}.{m.group(4)}'
    return key


MMDET_MODELS = {
    'ssd/ssd300_coco.py': lambda: mmdet_ssd_vgg_layout(300),
    'ssd/ssd512_coco.py': lambda: mmdet_ssd_vgg_layout(512),
    'ssd/ssd300_voc0712.py': lambda: mmdet_ssd_vgg_layout(300, num_classes=20),
    'ssd/ssdlite_mobilenetv2_coco.py': mmdet_ssdlite_layout,
    'retinanet/retinanet_r50_fpn_1x_coco.py': mmdet_retinanet_layout,
}


@pytest.mark.parametrize('config', sorted(MMDET_MODELS))
def test_mmdet_keys_map_exactly(config):
    theirs = fake_state(MMDET_MODELS[config]())
    converted = convert_mmdet(theirs)
    assert_maps_exactly(converted, model_layout(config))
    for key, value in theirs.items():
        assert converted[mmdet_detkit_key(key)] is value, key  # renamed, never altered


@pytest.mark.parametrize('config', ['ssd/ssd300_coco.py', 'ssd/ssdlite_mobilenetv2_coco.py',
                                    'retinanet/retinanet_r50_fpn_1x_coco.py'])
def test_mmdet_cli_and_init_detector(tmp_path, config):
    """An mmdetection 3.x checkpoint file ({'meta': {'dataset_meta': ...}, 'state_dict'}) converted by the CLI
    loads with weights_only and through init_detector, its class names carried over."""
    theirs = fake_state(MMDET_MODELS[config]())
    classes = tuple(f'class{i}' for i in range(80))
    src, dst = tmp_path / 'mmdet.pth', tmp_path / 'detkit.pth'
    torch.save({'meta': {'dataset_meta': {'classes': classes}, 'epoch': 24}, 'state_dict': theirs}, src)
    out = run_tool('mmdet_to_detkit.py', src, dst, '--config', CONFIGS / config)
    assert f'wrote {len(theirs)} tensors' in out
    ckpt = torch.load(dst, weights_only=True)
    assert ckpt['meta']['dataset_meta']['classes'] == classes
    model = init_detector(str(CONFIGS / config), str(dst))
    assert model.dataset_meta['classes'] == classes
    ours = model.state_dict()
    for key, value in theirs.items():
        assert torch.equal(ours[mmdet_detkit_key(key)], value), key


def test_mmdet_unknown_keys_and_misfits_are_named(tmp_path):
    with pytest.raises(ValueError, match="'rpn_head.rpn_conv.weight'.*one-stage"):
        convert_mmdet({'rpn_head.rpn_conv.weight': torch.zeros(1)})
    # an SSD300 checkpoint checked against the SSD512 model: the missing level and the different shapes are listed
    converted = convert_mmdet(fake_state(mmdet_ssd_vgg_layout(300)))
    cfg = load_config(CONFIGS / 'ssd' / 'ssd512_coco.py')
    with torch.device('meta'):
        ssd512 = MODELS.build(dict(cfg.model, check_input_size=False))
    with pytest.raises(ValueError, match=r'ssd300\.pth does not fit SingleStageDetector: 8 model keys missing '
                                         r"\['neck.extra_layers.4.0.conv.weight'.*4 shape mismatches "
                                         r"\['bbox_head.cls_convs.4.weight: \(324, 256, 3, 3\) vs model \(486"):
        check_fits(converted, ssd512, 'ssd300.pth')
    # the CLI says so too, naming the file, and writes nothing
    src = tmp_path / 'ssd300.pth'
    torch.save({'state_dict': fake_state(mmdet_ssd_vgg_layout(300))}, src)
    with pytest.raises(ValueError, match=f'{re.escape(str(src))} does not fit'):
        run_tool('mmdet_to_detkit.py', src, tmp_path / 'o.pth', '--config', CONFIGS / 'ssd' / 'ssd512_coco.py')
    assert not (tmp_path / 'o.pth').exists()
