"""The _tv configs give torchvision's detections: a torchvision detector's weights (random, with a perturbed
classification head so that there is something to detect), saved to disk, converted by the CLI and run by
inference_detector on the shared photos, return torchvision's own boxes (within 1e-2 px, in original-image pixels),
scores (within 1e-3) and labels (mapped as the config states).

Measured on the four photos: SSD300 boxes within 0.005 px and scores within 1e-5; RetinaNet within 2e-4 px and
1e-6. Detections whose scores differ by less than the float rounding may swap places, so each torchvision
detection is paired with the detkit detection of its class and nearest box (one to one) before comparing.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import runpy
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision

from detkit.apis import inference_detector, init_detector
from detkit.utils import load_config

REPO = Path(__file__).resolve().parents[2]
CONVERTER = REPO / 'tools' / 'model_converters' / 'torchvision_to_detkit.py'
BOX_TOL, SCORE_TOL = 1e-2, 1e-3


def convert(kind: str, src: Path, dst: Path, config: Path) -> None:
    """``python tools/model_converters/torchvision_to_detkit.py KIND SRC DST --config CONFIG``, in this process."""
    argv = sys.argv
    try:
        sys.argv = [str(CONVERTER), kind, str(src), str(dst), '--config', str(config)]
        with contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str(CONVERTER), run_name='__main__')
    finally:
        sys.argv = argv


def torchvision_input(path: str) -> torch.Tensor:
    """What torchvision's detectors take: ``Tensor[3, H, W]`` RGB floats in 0..1 (from the same decoded JPEG)."""
    bgr = cv2.imread(path)
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1).float() / 255


def paired_differences(theirs: dict, ours: dict, label_offset: int) -> tuple[float, float]:
    """Max box and score differences after pairing every torchvision detection with the detkit detection of the
    same class (``ours + label_offset``) and nearest box; the pairing must be one to one.

    Returns:
        ``(max box difference in pixels, max score difference)``.
    """
    assert len(theirs['boxes']) == len(ours['boxes']) > 0, (len(theirs['boxes']), len(ours['boxes']))
    cost = (theirs['boxes'][:, None] - ours['boxes'][None]).abs().amax(-1)  # (K, K) pixels
    cost += (theirs['scores'][:, None] - ours['scores'][None]).abs() * 1e3  # a tie on the box goes by score
    cost[theirs['labels'][:, None] != (ours['labels'] + label_offset)[None]] = float('inf')
    pair = cost.argmin(1)
    assert len(set(pair.tolist())) == len(pair), 'two torchvision detections pair with the same detkit detection'
    return ((theirs['boxes'] - ours['boxes'][pair]).abs().max().item(),
            (theirs['scores'] - ours['scores'][pair]).abs().max().item())


@pytest.fixture(scope='module')
def ssd300(tmp_path_factory):
    """torchvision's ssd300_vgg16 (91 classes) with random weights and class biases ~ N(0, 2), and the detkit
    model init_detector builds from its converted file with configs/ssd/ssd300_coco_tv.py."""
    torch.manual_seed(0)
    tv = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=91).eval()
    with torch.no_grad():
        for conv in tv.head.classification_head.module_list:
            conv.bias.normal_(0.0, 2.0)
    root = tmp_path_factory.mktemp('ssd300_tv')
    torch.save(tv.state_dict(), root / 'ssd300_vgg16.pth')
    config = REPO / 'configs' / 'ssd' / 'ssd300_coco_tv.py'
    convert('ssd300_vgg16', root / 'ssd300_vgg16.pth', root / 'detkit.pth', config)
    return tv, init_detector(str(config), str(root / 'detkit.pth')), root / 'detkit.pth'


@pytest.mark.slow  # two SSD300s on four photos (and the fixture's conversion)
def test_ssd300_coco_tv_gives_torchvision_detections(ssd300, shared_jpegs):
    tv, model, _ = ssd300
    categories = torchvision.models.detection.SSD300_VGG16_Weights.COCO_V1.meta['categories']
    assert model.dataset_meta['classes'] == tuple(categories[1:])  # detkit label k = torchvision label k + 1
    for path in shared_jpegs:
        with torch.no_grad():
            theirs = tv([torchvision_input(path)])[0]
        ours = inference_detector(model, path)
        assert len(ours['boxes']) == 200  # torchvision's detections_per_img is reached
        box_diff, score_diff = paired_differences(theirs, ours, label_offset=1)
        assert box_diff < BOX_TOL and score_diff < SCORE_TOL, (path, box_diff, score_diff)


def test_plain_ssd300_coco_does_not(ssd300, shared_jpegs):
    """ssd300_coco.py (mmdetection's mean, uint8 resize, unclipped anchors, 1000 per level) with the same weights
    moves torchvision's top detections by pixels: the reason the _tv config exists."""
    tv, _, ckpt = ssd300
    plain = init_detector(str(REPO / 'configs' / 'ssd' / 'ssd300_coco.py'), str(ckpt),
                          cfg_options={'model.bbox_head.num_classes': 90})
    with torch.no_grad():
        theirs = tv([torchvision_input(shared_jpegs[0])])[0]
    ours = inference_detector(plain, shared_jpegs[0])
    top = theirs['boxes'][:10]
    gap = (top[:, None] - ours['boxes'][None]).abs().amax(-1)
    gap[theirs['labels'][:10, None] != (ours['labels'] + 1)[None]] = float('inf')
    assert gap.min(1).values.max() > 1.0  # pixels


#: the short and long side the RetinaNet comparison resizes to on both sides (torchvision's min_size and max_size):
#: half of the config's (800, 1333), a quarter of the pixels to run; the config's values are checked against
#: torchvision's defaults separately
RETINANET_SIZE = (400, 667)


def test_retinanet_r50_fpn_coco_tv_resizes_as_torchvision_does_by_default():
    cfg = load_config(REPO / 'configs' / 'retinanet' / 'retinanet_r50_fpn_coco_tv.py')
    resize = cfg.test_dataloader.dataset.pipeline[1]
    defaults = inspect.signature(torchvision.models.detection.RetinaNet).parameters
    assert resize.type == 'Resize' and resize.keep_ratio and resize.size_rounding == 'floor'
    assert tuple(resize.scale) == (defaults['max_size'].default, defaults['min_size'].default) == (1333, 800)


@pytest.mark.slow
def test_retinanet_r50_fpn_coco_tv_gives_torchvision_detections(tmp_path, shared_jpegs):
    """The whole _tv pipeline (resize, normalise, pad, anchors, decoding, post-processing) at RETINANET_SIZE."""
    torch.manual_seed(0)
    min_size, max_size = RETINANET_SIZE
    tv = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91,
                                                             min_size=min_size, max_size=max_size).eval()
    with torch.no_grad():
        # thousands of candidates above 0.05. (Random batch norm statistics would also be possible, but they blow up
        # the random box deltas: boxes thousands of pixels tall, clipped to the image, whose float32 rounding then
        # reaches 0.02 px on their clipped corners; the backbone's conversion is tested in tests/models.)
        tv.head.classification_head.cls_logits.bias.normal_(-3.0, 1.0)
    torch.save(tv.state_dict(), tmp_path / 'retinanet_resnet50_fpn.pth')
    config = REPO / 'configs' / 'retinanet' / 'retinanet_r50_fpn_coco_tv.py'
    convert('retinanet_resnet50_fpn', tmp_path / 'retinanet_resnet50_fpn.pth', tmp_path / 'detkit.pth', config)
    model = init_detector(str(config), str(tmp_path / 'detkit.pth'),
                          cfg_options={'test_dataloader.dataset.pipeline.1.scale': (max_size, min_size)})
    categories = torchvision.models.detection.RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta['categories']
    assert model.dataset_meta['classes'] == tuple(categories)  # labels unchanged
    for path in shared_jpegs:
        with torch.no_grad():
            theirs = tv([torchvision_input(path)])[0]
        ours = inference_detector(model, path)
        assert len(ours['boxes']) == 300  # torchvision's detections_per_img is reached
        box_diff, score_diff = paired_differences(theirs, ours, label_offset=0)
        assert box_diff < BOX_TOL and score_diff < SCORE_TOL, (path, box_diff, score_diff)
