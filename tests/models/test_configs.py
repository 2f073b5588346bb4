"""Every config under configs/ builds, runs a forward at its input size and trains one step; the published counts."""
from pathlib import Path

import pytest
import torch

from detkit.registry import MODELS
from detkit.utils import load_config

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
ALL_CONFIGS = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob('*.py') if '_base_' not in p.parts)
FREE_SIZE = 128  # anchors that fit any input size: a small one keeps the test fast


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def input_size(model) -> int:
    size = model.bbox_head.anchor_generator.input_size
    return FREE_SIZE if size is None else size


def generated_targets(n: int, size: int, num_classes: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    targets = []
    for _ in range(n):
        xy = torch.rand(3, 2, generator=g) * size * 0.6
        wh = torch.rand(3, 2, generator=g) * size * 0.35 + size * 0.05
        targets.append({'boxes': torch.cat([xy, xy + wh], 1),
                        'labels': torch.randint(0, num_classes, (3,), generator=g)})
    return targets


def test_the_list_covers_every_family():
    families = {name.split('/')[0] for name in ALL_CONFIGS}
    assert {'ssd', 'retinanet', 'm2det', 'quickstart'} <= families
    for name in ('retinanet/retinanet_r50_fpn_1x_coco.py', 'retinanet/retinanet_r50_fpn_voc0712.py',
                 'retinanet/retinanet_r50_fpn_coco_tv.py', 'ssd/ssd300_coco_tv.py', 'm2det/m2det320_vgg_coco.py',
                 'm2det/m2det512_vgg_coco.py', 'm2det/m2det512_vgg_voc0712.py', 'm2det/m2det320_r50_coco.py'):
        assert name in ALL_CONFIGS


#: the configs whose step below takes more than 15 s of CPU time (the slow marker's meaning)
SLOW_CONFIGS = {'m2det/m2det320_r50_coco.py', 'm2det/m2det320_vgg_coco.py', 'm2det/m2det512_vgg_coco.py',
                'm2det/m2det512_vgg_voc0712.py'}
#: 512 px configs -> the config with the same modules at a smaller size, whose step trains the whole network: at
#: 512 only the head trains, on one image (the backbone and neck are the sibling's, already checked there); the
#: forward, the anchors, the loss and the prediction still run at 512
SMALLER_SIBLING = {'ssd/ssd512_coco.py': 'ssd/ssd300_coco.py', 'ssd/ssd512_voc0712.py': 'ssd/ssd300_voc0712.py',
                   'm2det/m2det512_vgg_coco.py': 'm2det/m2det320_vgg_coco.py',
                   'm2det/m2det512_vgg_voc0712.py': 'm2det/m2det320_vgg_coco.py'}


def test_the_512_configs_have_the_modules_of_their_sibling():
    for big, small in SMALLER_SIBLING.items():
        a, b = (load_config(CONFIGS / n).model for n in (big, small))
        assert big in ALL_CONFIGS and small in ALL_CONFIGS
        for part in ('backbone', 'neck'):
            assert a[part]['type'] == b[part]['type'], (big, part)
        assert {k: v for k, v in a.backbone.items() if k != 'input_size'} == \
            {k: v for k, v in b.backbone.items() if k != 'input_size'}, big


@pytest.mark.parametrize('name', [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW_CONFIGS else [])
                                  for n in ALL_CONFIGS])
def test_builds_forwards_and_trains_one_step(name):
    torch.manual_seed(0)
    cfg = load_config(CONFIGS / name)
    model = MODELS.build(cfg.model)
    size = input_size(model)
    head = model.bbox_head
    n = 2  # batch norm of the 1x1 maps needs more than one value in training
    if name in SMALLER_SIBLING:  # a frozen backbone and neck (eval mode: running statistics), one image
        for part in (model.backbone, model.neck):
            part.requires_grad_(False).eval()
        n = 1
    images = torch.randn(n, 3, size, size)
    targets = generated_targets(n, size, head.num_classes)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    forwards = []  # what model(images) returns, from the forward the loss runs (one forward at this size, not two)
    hook = model.register_forward_hook(lambda module, args, out: forwards.append(out))
    losses = model.loss(images, targets)
    hook.remove()
    cls_scores, bbox_preds = forwards[0]
    assert len(cls_scores) == len(bbox_preds) == len(model.bbox_head.num_base_priors)
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    before = [p.detach().clone() for p in head.parameters()]
    opt.zero_grad()
    total.backward()
    opt.step()
    assert all(p.grad is not None for p in head.parameters())  # the loss reaches every head weight
    assert any(not torch.equal(b, p) for b, p in zip(before, head.parameters()))
    model.eval()
    meta = {'img_shape': (size, size), 'ori_shape': (size, size), 'scale_factor': (1.0, 1.0)}
    result = model.predict(images[:1], [meta])[0]
    assert result['boxes'].shape[1] == 4 and result['labels'].dtype == torch.int64


def dataset_leaves(cfg: dict, where: str) -> list[tuple[str, dict]]:
    """Every dataset config inside wrappers, with its path; a config without ``type`` (a list a child config
    replaced whole, say) is an error here rather than at the first training run."""
    assert 'type' in cfg, f'{where} has no type: {sorted(cfg)}'
    if 'datasets' in cfg:
        return [leaf for i, c in enumerate(cfg['datasets']) for leaf in dataset_leaves(c, f'{where}.datasets[{i}]')]
    if 'dataset' in cfg:
        return dataset_leaves(cfg['dataset'], f'{where}.dataset')
    return [(where, cfg)]


@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_datasets_are_complete_and_resize_to_the_anchor_size(name):
    cfg = load_config(CONFIGS / name)
    anchor_cfg = cfg.model.bbox_head.get('anchor_generator') or {}
    fixed = anchor_cfg.get('input_size')
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        for where, leaf in dataset_leaves(cfg[key]['dataset'], f'{key}.dataset'):
            assert leaf.get('ann_file') and leaf.get('pipeline'), where
            resizes = [t for t in leaf['pipeline'] if t['type'] == 'Resize']
            assert len(resizes) == 1, where
            if fixed is not None:  # anchors made for one size: every pipeline must produce it
                assert tuple(resizes[0]['scale']) == (fixed, fixed) and resizes[0]['keep_ratio'] is False, where


@pytest.mark.parametrize('name, size, anchors', [
    ('retinanet/retinanet_r50_fpn_1x_coco.py', 640, [57600, 14400, 3600, 900, 225]),
    ('m2det/m2det320_vgg_coco.py', 320, [9600, 2400, 600, 150, 54, 6]),
    ('m2det/m2det512_vgg_voc0712.py', 512, [24576, 6144, 1536, 384, 96, 24]),
    ('m2det/m2det512_vgg_coco.py', 512, [24576, 6144, 1536, 384, 96, 24]),
])
def test_anchor_counts(name, size, anchors):
    cfg = load_config(CONFIGS / name)
    generator = MODELS.build(dict(cfg.model.bbox_head, in_channels=[256] * len(anchors))).anchor_generator
    got = [len(a) for a in generator.grid_priors(generator.featmap_sizes_for((size, size)))]
    assert got == anchors
    assert sum(got) == {640: 76725, 320: 12810, 512: 32760}[size]


def test_retinanet_torchvision_layout_parameters():
    """retinanet_r50_fpn_coco_tv.py states torchvision's layout (P6/P7 from P5, 91 classes): torchvision's
    retinanet_resnet50_fpn built without weights (plain batch norms; its model card's 34,014,999 counts a pretrained
    model, whose frozen batch norms hold weight and bias as buffers)."""
    import torchvision

    ours = MODELS.build(load_config(CONFIGS / 'retinanet/retinanet_r50_fpn_coco_tv.py').model)
    tv = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    assert num_params(ours) == num_params(tv) == 34_068_119
    t = ours.test_cfg  # torchvision's postprocess_detections
    assert (t.score_thr, t.nms_pre, t.nms.iou_threshold, t.max_per_img, t.min_bbox_size) == (0.05, 1000, 0.5, 300, -1)


def test_ssd300_torchvision_layout_parameters():
    """ssd300_coco_tv.py: torchvision's ssd300_vgg16 with its 91 classes (35,641,826 parameters) and its
    post-processing."""
    ours = MODELS.build(load_config(CONFIGS / 'ssd/ssd300_coco_tv.py').model)
    assert num_params(ours) == 35_641_826
    t = ours.test_cfg
    assert (t.score_thr, t.nms_pre, t.nms_pre_per_class, t.nms.iou_threshold, t.max_per_img, t.min_bbox_size) == \
        (0.01, 0, 400, 0.45, 200, -1)


def test_m2det320_vgg_parameters():
    cfg = load_config(CONFIGS / 'm2det/m2det320_vgg_coco.py')
    model = MODELS.build(cfg.model)
    assert num_params(model) == 132_633_140  # the official M2Det320-VGG16 with 81 classes
    t = model.test_cfg
    assert (t.score_thr, t.nms.type, t.nms.method, t.nms.iou_threshold, t.max_per_class) == \
        (0.1, 'soft_nms', 'linear', 0.45, 50)
