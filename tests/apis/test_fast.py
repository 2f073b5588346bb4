"""init_detector(fast=...): 'exact' keeps the detections identical, 'bf16' runs the network in bfloat16.

"Identical" is defined as: the same number of detections, and at every rank the same label, its box within
1e-2 px and its score within 1e-4; two detections may trade ranks only where the reference scores differ by less
than 1e-4 (float rounding may reorder near-ties). The reference is the same model without ``fast``; batch norms get
random statistics and affine parameters first, so that folding them changes the weights, and the head is scaled
to sane outputs (the ``calibrate_head`` fixture).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from detkit.apis import inference_detector, init_detector
from detkit.apis.fast import fold_batch_norms, make_fast
from detkit.datasets.shapes import draw_shapes_image
from detkit.deploy import build_graph, preprocess
from detkit.models.backbones import ResNet
from detkit.registry import MODELS
from detkit.utils import load_config

REPO = Path(__file__).resolve().parents[2]
BOX_TOL, SCORE_TOL = 1e-2, 1e-4


def randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial eval statistics and affine parameters for every batch norm."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


def assert_identical(ours: dict, ref: dict) -> None:
    assert len(ours['boxes']) == len(ref['boxes']) > 0
    cost = (ours['boxes'][:, None] - ref['boxes'][None]).abs().amax(-1)
    cost[ours['labels'][:, None] != ref['labels'][None]] = float('inf')
    pair = cost.argmin(1)
    assert torch.isfinite(cost.gather(1, pair[:, None])).all()
    moved = pair != torch.arange(len(pair))
    assert ((ref['scores'][pair] - ref['scores'])[moved].abs() < SCORE_TOL).all(), 'reordered beyond near-ties'
    assert (ours['boxes'] - ref['boxes'][pair]).abs().max() < BOX_TOL
    assert (ours['scores'] - ref['scores'][pair]).abs().max() < SCORE_TOL


def test_fold_batch_norms_keeps_resnet_outputs():
    torch.manual_seed(0)
    net = ResNet(depth=50, out_indices=(1, 2, 3)).eval()
    randomise_norms(net)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        ref = net(x)
        assert fold_batch_norms(net) == 53  # stem, 16 blocks x 3, 4 downsamples
        out = net(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


class PreActivationNet(nn.Module):
    """A stem conv, then a pre-activation residual block (He et al. 2016): ``bn1`` runs before ``conv1`` and
    ``bn2`` right after it, so only ``conv1 -> bn2`` is a conv-then-batch-norm pair; the names pair wrongly."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.channels_last = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        out = self.conv1(torch.relu(self.bn1(x)))
        return x + self.conv2(torch.relu(self.bn2(out)))


class BranchingNet(nn.Module):
    """``conv``'s output feeds ``bn`` and a residual sum: folding would change the sum."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_fast_exact_folds_only_proven_sequential_pairs():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    net = PreActivationNet().eval()
    randomise_norms(net)
    with torch.no_grad():
        ref = net(x)
        fast = make_fast(net, 'exact')
        out = fast(x)
    assert type(net.bn1) is nn.BatchNorm2d and isinstance(net.bn2, nn.Identity)  # bn2 went into conv1
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    net = BranchingNet().eval()
    randomise_norms(net)
    with torch.no_grad():
        ref = net(x)
        assert fold_batch_norms(net) == 0
        torch.testing.assert_close(net(x), ref, rtol=0, atol=0)
    assert type(net.bn) is nn.BatchNorm2d


@pytest.mark.parametrize('config, folded, left', [
    ('configs/quickstart/ssd_shapes.py', 20, 0),  # ResNet-18: stem, 8 blocks x 2, 3 downsamples
    ('configs/quickstart/retinanet_shapes.py', 20, 0),
    ('configs/quickstart/m2det_shapes.py', 38, 1),  # the MLFPN's norm of the largest map follows no conv
    ('configs/ssd/ssdlite_mobilenetv2_coco.py', 76, 0),  # MobileNetV2 and the SSDLite neck and head
])
def test_fold_batch_norms_counts_on_the_detectors(config, folded, left):
    """The whole detector does not trace (the MLFPN checks shapes): its backbone, blocks and layers do."""
    model = MODELS.build(load_config(REPO / config).model).eval()
    assert fold_batch_norms(model) == folded
    assert sum(type(m) is nn.BatchNorm2d for m in model.modules()) == left


def test_make_fast_refuses_training_mode_and_unknown_modes():
    model = init_detector(str(REPO / 'configs' / 'quickstart' / 'ssd_shapes.py'), None)
    with pytest.raises(ValueError, match="fast must be one of"):
        make_fast(model, 'fp16')
    with pytest.raises(ValueError, match='model.eval'):
        make_fast(model.train(), 'exact')


@pytest.mark.parametrize('config, options, size', [
    ('configs/quickstart/ssd_shapes.py', None, 256),  # ResNet-18 with batch norms, channels-last already
    ('configs/ssd/ssd300_coco.py', None, 300),  # VGG16: no batch norm, layout only
    ('configs/m2det/m2det320_vgg_coco.py', {'model.neck.planes': 64, 'model.neck.num_levels': 2}, 320),  # soft-NMS
])
def test_fast_exact_keeps_the_detections(config, options, size, calibrate_head):
    torch.manual_seed(0)
    model = init_detector(str(REPO / config), None, cfg_options=options)
    randomise_norms(model)
    images = [draw_shapes_image(np.random.default_rng(i), size)[0] for i in range(2)]
    calibrate_head(model, preprocess(build_graph(model).spec, torch.from_numpy(images[0][None]))[0], (0.0, 2.0))
    ref = inference_detector(model, images)
    fast = make_fast(model, 'exact')
    assert fast.channels_last and fast.autocast_dtype is None
    for ours, theirs in zip(inference_detector(fast, images), ref):
        assert_identical(ours, theirs)


def test_fast_exact_keeps_retinanet_detections(shared_jpegs, calibrate_head):
    """Sigmoid scores, FPN and keep-ratio input (ResNet-18, fit into 667x400, to keep the test short; the batch norm
    folding of a ResNet-50 is tested above)."""
    torch.manual_seed(0)
    model = init_detector(str(REPO / 'configs' / 'retinanet' / 'retinanet_r50_fpn_coco_tv.py'), None,
                          cfg_options={'model.backbone.depth': 18,
                                       'test_dataloader.dataset.pipeline.1.scale': (667, 400)})
    randomise_norms(model)
    image = cv2.imread(shared_jpegs[0])
    calibrate_head(model, preprocess(build_graph(model).spec, torch.from_numpy(image[None]))[0], (-4.0, 1.0))
    ref = inference_detector(model, image)
    assert_identical(inference_detector(make_fast(model, 'exact'), image), ref)


def test_fast_bf16_runs_the_network_in_bfloat16():
    torch.manual_seed(0)
    model = init_detector(str(REPO / 'configs' / 'quickstart' / 'ssd_shapes.py'), None, fast='bf16')
    dtypes = []
    model.bbox_head.register_forward_hook(lambda m, i, o: dtypes.append(o[0][0].dtype))
    image = draw_shapes_image(np.random.default_rng(0), 256)[0]
    out = inference_detector(model, image)
    assert dtypes == [torch.bfloat16]
    assert out['boxes'].dtype == out['scores'].dtype == torch.float32 and len(out['boxes'])
