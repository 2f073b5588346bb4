"""The published SSD configs: they load, build, and have the published sizes and recipes."""
from pathlib import Path

import pytest
import torch

from detkit.registry import MODELS
from detkit.utils import load_config

CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / 'ssd'

# config -> (input size, anchors, foreground classes)
EXPECTED = {
    'ssd300_voc0712.py': (300, 8732, 20),
    'ssd512_voc0712.py': (512, 24564, 20),
    'ssd300_coco.py': (300, 8732, 80),
    'ssd512_coco.py': (512, 24564, 80),
    'ssd300_r50_coco.py': (300, 8732, 80),
    'ssdlite_mobilenetv2_coco.py': (320, 3234, 80),
}
SSD_PIPELINE = ['LoadImageFromFile', 'LoadAnnotations', 'Expand', 'MinIoURandomCrop', 'Resize', 'RandomFlip',
                'PhotoMetricDistortion', 'Normalize', 'PackDetInputs']


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_pipeline(cfg) -> list[dict]:
    dataset = cfg.train_dataloader.dataset
    while 'pipeline' not in dataset:
        dataset = dataset['datasets'][0] if 'datasets' in dataset else dataset['dataset']
    return dataset['pipeline']


@pytest.fixture(scope='module')
def built():
    """Every config and its model, built once for the module."""
    out = {}
    for name in EXPECTED:
        cfg = load_config(CONFIGS / name)
        out[name] = (cfg, MODELS.build(cfg.model))
    return out


def test_all_configs_are_tested():
    # the _tv configs run torchvision's weights with torchvision's settings: tests/apis/test_torchvision_equivalence.py
    assert sorted(p.name for p in CONFIGS.glob('*.py') if not p.stem.endswith('_tv')) == sorted(EXPECTED)


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_config_builds_with_published_layout(built, name):
    cfg, model = built[name]
    size, anchors, num_classes = EXPECTED[name]
    head = model.bbox_head
    assert head.num_classes == num_classes and head.cls_out_channels == num_classes + 1
    gen = head.anchor_generator
    assert gen.input_size == size
    assert sum(a.shape[0] for a in gen.grid_priors(gen.featmap_sizes)) == anchors
    # the pipeline resizes to the anchors' input size and follows the SSD augmentation order
    pipeline = train_pipeline(cfg)
    assert [t['type'] for t in pipeline] == SSD_PIPELINE
    resize = next(t for t in pipeline if t['type'] == 'Resize')
    assert tuple(resize['scale']) == (size, size) and resize['keep_ratio'] is False
    assert next(t for t in cfg.test_dataloader.dataset.pipeline if t['type'] == 'Resize')['scale'] == (size, size)
    t = model.test_cfg
    assert (t.nms_pre, t.score_thr, t.nms.type, t.nms.iou_threshold, t.max_per_img, t.min_bbox_size) == \
        (1000, 0.02, 'nms', 0.45, 200, 0)
    assigner = head.assigner
    assert (assigner.pos_iou_thr, assigner.neg_iou_thr, assigner.min_pos_iou, assigner.gt_max_assign_all) == \
        (0.5, 0.5, 0.0, False)
    assert head.neg_pos_ratio == 3 and head.loss_bbox.beta == 1.0 and not head.use_sigmoid
    assert head.bbox_coder.target_stds == (0.1, 0.1, 0.2, 0.2)


def test_vgg_recipes(built):
    for name, lr, times, milestones in [('ssd300_voc0712.py', 1e-3, 10, [16, 20]),
                                        ('ssd512_voc0712.py', 1e-3, 10, [16, 20]),
                                        ('ssd300_coco.py', 2e-3, 5, [16, 22]), ('ssd512_coco.py', 2e-3, 5, [16, 22])]:
        cfg = built[name][0]
        assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=lr, momentum=0.9, weight_decay=5e-4), name
        assert cfg.train_dataloader.batch_size == 8 and cfg.auto_scale_lr.base_batch_size == 64
        assert cfg.train_dataloader.dataset.type == 'RepeatDataset' and cfg.train_dataloader.dataset.times == times
        warmup, steps = cfg.param_scheduler
        assert (warmup.type, warmup.start_factor, warmup.end, warmup.by_epoch) == ('LinearLR', 0.001, 500, False)
        assert steps.milestones == milestones and cfg.train_cfg.max_epochs == 24
        assert next(t for t in train_pipeline(cfg) if t['type'] == 'Normalize')['std'] == [1, 1, 1]


def test_r50_and_ssdlite_recipes(built):
    r50 = built['ssd300_r50_coco.py'][0]
    assert r50.optim_wrapper.optimizer.lr == 2.6e-3 and r50.train_dataloader.batch_size == 32
    assert r50.optim_wrapper.paramwise_cfg == dict(norm_decay_mult=0.0, bias_decay_mult=0.0)
    assert r50.param_scheduler[0].end == 300 and r50.param_scheduler[1].milestones == [43, 54]
    assert r50.train_cfg.max_epochs == 65
    lite = built['ssdlite_mobilenetv2_coco.py'][0]
    assert lite.optim_wrapper.optimizer == dict(type='SGD', lr=0.015, momentum=0.9, weight_decay=4e-5)
    assert lite.train_dataloader.batch_size == 24 and lite.train_dataloader.dataset.times == 5
    assert lite.param_scheduler[1].type == 'CosineAnnealingLR' and lite.train_cfg.max_epochs == 120
    bns = [m for m in built['ssdlite_mobilenetv2_coco.py'][1].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)


def test_parameter_counts(built, torchvision_ssd300):
    voc = num_params(built['ssd300_voc0712.py'][1])
    assert voc == 26_285_486
    assert voc == num_params(torchvision_ssd300(21))
    # 81-way softmax (80 COCO classes + background): the same as torchvision with num_classes=81
    assert num_params(built['ssd300_coco.py'][1]) == num_params(torchvision_ssd300(81)) == 34_305_206
    assert num_params(built['ssd300_r50_coco.py'][1]) == 22_894_902  # NVIDIA SSD300-ResNet50


def test_nvidia_extra_blocks(built):
    neck = built['ssd300_r50_coco.py'][1].neck
    # 1x1 conv-BN-ReLU then 3x3 conv-BN-ReLU, bias-free; parameters: convs + BN weight and bias
    mids, outs, ins = [256, 256, 128, 128, 128], [512, 512, 256, 256, 256], [1024, 512, 512, 256, 256]
    expected = sum(i * m + 2 * m + m * o * 9 + 2 * o for i, m, o in zip(ins, mids, outs))
    assert num_params(neck) == expected == 3_773_696
    assert all(c.bias is None for c in neck.modules() if isinstance(c, torch.nn.Conv2d))
    feats = neck.eval()((torch.zeros(1, 1024, 38, 38),))  # eval: batch norm of a 1x1 map needs running stats
    assert [f.shape[-1] for f in feats] == [38, 19, 10, 5, 3, 1]
    assert [f.shape[1] for f in feats] == [1024, 512, 512, 256, 256, 256]


def test_ssdlite_at_the_wrong_size_is_refused(built):
    model = built['ssdlite_mobilenetv2_coco.py'][1].eval()
    with pytest.raises(ValueError, match=r'320x320.*\(20, 20\).*\(19, 19\)'):
        model.predict(torch.zeros(1, 3, 300, 300), rescale=False)
    results = model.predict(torch.zeros(1, 3, 320, 320), rescale=False)
    assert results[0]['boxes'].shape[1] == 4


def test_flops_match_torchvision_published_ops():
    """tools/analysis/get_flops.py counts 34.858 GMACs for SSD300 with 91 classes, torchvision's published figure."""
    import importlib.util

    from torchvision.models.detection import SSD300_VGG16_Weights

    path = CONFIGS.parents[1] / 'tools' / 'analysis' / 'get_flops.py'
    spec = importlib.util.spec_from_file_location('get_flops', path)
    get_flops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(get_flops)
    cfg = load_config(CONFIGS / 'ssd300_coco.py', {'model.bbox_head.num_classes': 90})
    stats = get_flops.count(MODELS.build(cfg.model).eval(), (300, 300))
    meta = SSD300_VGG16_Weights.COCO_V1.meta
    assert stats['params'] == meta['num_params'] == 35_641_826
    assert round(stats['flops'] / 2e9, 3) == meta['_ops'] == 34.858  # torchvision reports multiply-adds
