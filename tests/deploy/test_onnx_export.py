"""ONNX export (detkit.deploy, tools/deployment): onnxruntime's detections against detkit's own ``predict``.

Reference: the detector's ``predict`` (detkit's candidate lists, ``batched_nms`` / ``batched_soft_nms`` kernels) on
the input the exported pre-processing makes (run in PyTorch), so both sides see the same pixels; the graph's
masked post-processing and ONNX ``NonMaxSuppression`` are an independent implementation of it. Detections are
compared after pairing each one with the detection of its class and nearest box (equal scores may come out in
another order): boxes within 1e-2 px, scores within 1e-3, the same count and labels.

Random weights, with the head's last convs scaled to unit output spread on the first image (the
``calibrate_head`` fixture) and classification biases that give hundreds of detections.

Measured (onnxruntime vs predict, the largest difference over the images): SSD300 boxes 1.0e-3 px, scores 1.0e-5;
RetinaNet 3.0e-3 px, 4.7e-6; M2Det (soft-NMS, ~2,400 detections per image) 9.6e-4 px, 2.5e-6.

The whole file takes ~75 s of one core (exports dominate: ~5 s for SSD300, ~17 s for the symbolic-size RetinaNet).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from detkit.apis import init_detector
from detkit.datasets.shapes import draw_shapes_image
from detkit.datasets.transforms.transforms import rescale_size
from detkit.deploy import PreprocessSpec, build_graph, export_onnx, paired_differences, preprocess
from detkit.deploy.onnx_export import translation_table
from detkit.ops import batched_nms

REPO = Path(__file__).resolve().parents[2]
BOX_TOL, SCORE_TOL = 1e-2, 1e-3


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])


def export_module(module: nn.Module, example: tuple, path: Path, dynamic_shapes: dict | None = None) -> None:
    torch.onnx.export(module, example, str(path), dynamo=True, dynamic_shapes=dynamic_shapes, verbose=False,
                      custom_translation_table=translation_table(), external_data=False)


def reference(model: nn.Module, spec: PreprocessSpec, images: np.ndarray) -> list[dict]:
    """``predict`` on the exported pre-processing's input (same-size ``(N, H, W, 3)`` uint8 images)."""
    with torch.no_grad():
        inputs, (h, w), _ = preprocess(spec, torch.from_numpy(images))
        meta = dict(img_shape=(h, w), ori_shape=images.shape[1:3],
                    scale_factor=(w / images.shape[2], h / images.shape[1]))
        return model.predict(inputs, [meta] * len(images))


def shapes_images(n: int, size: int = 320) -> list[np.ndarray]:
    return [draw_shapes_image(np.random.default_rng(i), size)[0] for i in range(n)]


def test_paired_differences_pairs_by_class_and_box_and_names_mismatches():
    ref = {'boxes': torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [0, 0, 10, 10]]),
           'scores': torch.tensor([0.9, 0.5, 0.5]), 'labels': torch.tensor([0, 0, 1])}
    ours = (np.float32([[0, 0, 10, 10.004], [0, 0, 10, 10], [5, 5, 20, 20]]), np.float32([0.5, 0.9, 0.5002]),
            np.int64([1, 0, 0]))  # another order, tiny differences
    box, score = paired_differences(ours, ref)
    assert box == pytest.approx(0.004, abs=1e-5) and score == pytest.approx(2e-4, abs=1e-6)
    with pytest.raises(ValueError, match='2 detections against 3'):
        paired_differences(tuple(o[:2] for o in ours), ref)
    with pytest.raises(ValueError, match='no reference detection of its class'):
        paired_differences((ours[0], ours[1], np.int64([2, 0, 0])), ref)
    with pytest.raises(ValueError, match='pair with the same reference'):
        paired_differences((ours[0], ours[1], np.int64([0, 0, 0])), ref)


# ------------------------------------------------------------------------------------------- NMS and resizing
@pytest.mark.parametrize('max_per_class', [0, 3])
def test_nonmaxsuppression_is_batched_nms(tmp_path, max_per_class):
    """ONNX NonMaxSuppression in onnxruntime keeps exactly what detkit's batched_nms keeps, per class: integer boxes
    (IoUs of exactly 0.5, the threshold, must not suppress) and scores from a set of five (ties by index)."""

    class Nms(nn.Module):
        def forward(self, boxes, scores):
            return torch.ops.detkit_deploy.nms_per_class(boxes, scores, max_per_class, 0.5, -0.5)

    g = torch.Generator().manual_seed(0)
    n, c, a = 2, 3, 300
    xy = torch.randint(0, 40, (n, a, 2), generator=g).float()
    wh = torch.randint(1, 6, (n, a, 2), generator=g).float()
    boxes = torch.cat([xy, xy + wh], dim=2)
    scores = torch.randint(1, 6, (n, c, a), generator=g).float() / 5
    scores[torch.rand(n, c, a, generator=g) < 0.3] = -1  # not candidates
    export_module(Nms().eval(), (boxes, scores), tmp_path / 'nms.onnx')
    sel = session(tmp_path / 'nms.onnx').run(None, {'boxes': boxes.numpy(), 'scores': scores.numpy()})[0]
    got = {tuple(r) for r in sel.tolist()}
    expected = set()
    exact_half = 0
    for i in range(n):
        cls, idx = (scores[i] > -0.5).nonzero(as_tuple=True)
        keep = batched_nms(boxes[i, idx], scores[i, cls, idx], cls, 0.5)
        for k in range(c):
            kept = [int(j) for j in idx[keep][cls[keep] == k]]
            expected |= {(i, k, j) for j in (kept[:max_per_class] if max_per_class else kept)}
        b = boxes[i]
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        lt, rb = torch.maximum(b[:, None, :2], b[None, :, :2]), torch.minimum(b[:, None, 2:], b[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)
        exact_half += int((inter / (area[:, None] + area[None] - inter) == 0.5).sum())
    assert exact_half > 0  # the threshold case is exercised
    assert got == expected


@pytest.mark.parametrize('rounding', ['floor', 'half_up'])
def test_keep_ratio_preprocessing_is_the_python_pipelines(tmp_path, rounding):
    """The exported keep-ratio resize gives rescale_size's size for every image size tried (also those where
    float32 arithmetic is a pixel off), and the pixels of OpenCV's float resize + Normalize + Pad."""
    spec = PreprocessSpec(scale=(1333, 800), keep_ratio=True, size_rounding=rounding, mean=(123.675, 116.28, 103.53),
                          std=(58.395, 57.12, 57.375), to_rgb=True, pad_size_divisor=32, resizes_uint8=False)

    class Pre(nn.Module):
        def forward(self, image):
            x, (h, w), scale = preprocess(spec, image[None])
            return x, scale, torch.ones((), dtype=torch.int64) * h, torch.ones((), dtype=torch.int64) * w

    dims = {'image': {0: torch.export.Dim('h', min=2, max=4096), 1: torch.export.Dim('w', min=2, max=4096)}}
    export_module(Pre().eval(), (torch.zeros(480, 640, 3, dtype=torch.uint8),), tmp_path / 'pre.onnx', dims)
    sess = session(tmp_path / 'pre.onnx')
    # sizes where the short side lands on 800 only in double precision, and ordinary ones
    sizes = [(1, 149), (143, 806), (149, 298), (299, 806), (105, 1302), (480, 640), (427, 640), (612, 612),
             (500, 375), (333, 500), (1200, 1600), (1, 3000), (3000, 1), (1, 1500)]  # the last: a side of 1 px
    rng = np.random.default_rng(0)
    for h, w in sizes:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        x, scale, new_h, new_w = sess.run(None, {'image': img})
        expect_w, expect_h = rescale_size(w, h, (1333, 800), rounding)
        assert (int(new_h), int(new_w)) == (expect_h, expect_w), (h, w)
        assert min(expect_h, expect_w) >= 1
        assert x.shape[2:] == (-(-expect_h // 32) * 32, -(-expect_w // 32) * 32)
        np.testing.assert_allclose(scale, np.float32([expect_w / w, expect_h / h]), rtol=0, atol=0)
        if min(h, w) >= 100:  # the Python pipeline's float path: OpenCV resize, then mean/std, then zero padding
            ref = cv2.resize(img.astype(np.float32), (expect_w, expect_h), interpolation=cv2.INTER_LINEAR)
            ref = (cv2.cvtColor(ref, cv2.COLOR_BGR2RGB) - np.float32(spec.mean)) / np.float32(spec.std)
            np.testing.assert_allclose(x[0, :, :expect_h, :expect_w], ref.transpose(2, 0, 1), atol=1e-3)
            assert not x[0, :, expect_h:].any() and not x[0, :, :, expect_w:].any()


# ------------------------------------------------------------------------------------------- whole detectors
def check_model(tmp_path: Path, calibrate_head, config: str, cfg_options: dict | None, cls_bias: tuple[float, float],
                images: list[np.ndarray], min_dets: int) -> tuple[nn.Module, object, Path]:
    torch.manual_seed(0)
    model = init_detector(str(REPO / config), None, cfg_options=cfg_options)
    path = tmp_path / 'model.onnx'
    calibrate_head(model, preprocess(build_graph(model).spec, torch.from_numpy(images[0][None]))[0], cls_bias)
    graph = export_onnx(model, path)
    sess = session(path)
    for i, img in enumerate(images):
        ours = sess.run(None, {'image': img})
        assert ours[0].dtype == np.float32 and ours[2].dtype == np.int64
        ref = reference(model, graph.spec, img[None])[0]
        assert len(ref['boxes']) >= min_dets
        box, score = paired_differences(ours, ref)
        assert box < BOX_TOL and score < SCORE_TOL, (config, i, img.shape, box, score)
    return model, graph, path


@pytest.fixture(scope='module')
def photos(shared_jpegs) -> list[np.ndarray]:
    return [cv2.imread(p) for p in shared_jpegs]


@pytest.mark.slow  # the real SSD300: ~15 s
def test_ssd300_onnx_equals_pytorch(tmp_path, photos, calibrate_head):
    _, _, path = check_model(tmp_path, calibrate_head, 'configs/ssd/ssd300_voc0712.py', None, (0.0, 2.0),
                             photos + shapes_images(2), 150)
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert 'bilinear resize to 300x300' in meta['detkit.description'] and meta['detkit.max_dets'] == '200'
    assert len(json.loads(meta['detkit.classes'])) == 20


@pytest.mark.slow  # a symbolic-size export, ~20 s
def test_retinanet_onnx_equals_pytorch(tmp_path, photos, calibrate_head):
    """Keep-ratio resize, padding to /32 and five FPN levels, all of symbolic size: the four photos (three sizes)
    and a shapes image through one graph. ResNet-18, 64-channel FPN and head, fit into 667x400 instead of R50,
    256 channels and 1000x600: the same graph, smaller (the benchmark exports and checks the R50 at 1333x800)."""
    check_model(tmp_path, calibrate_head, 'configs/retinanet/retinanet_r50_fpn_voc0712.py',
                {'model.backbone.depth': 18, 'model.neck.out_channels': 64,
                 'model.bbox_head.feat_channels': 64, 'test_dataloader.dataset.pipeline.1.scale': (667, 400)},
                (-4.0, 1.0), photos + shapes_images(1), 100)


@pytest.mark.slow  # M2Det's MLFPN narrowed (planes 64, 2 levels): its soft-NMS post-processing is the subject
def test_m2det_soft_nms_onnx_equals_pytorch(tmp_path, photos, calibrate_head):
    model, graph, path = check_model(tmp_path, calibrate_head, 'configs/m2det/m2det320_vgg_coco.py',
                                     {'model.neck.planes': 64, 'model.neck.num_levels': 2}, (0.0, 1.5),
                                     photos + shapes_images(1), 100)
    assert model.test_cfg.nms.type == 'soft_nms' and graph.cfg.nms.type == 'soft_nms'
    assert model.test_cfg.max_per_class == 50
    ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
    assert 'Scan' in ops and 'NonMaxSuppression' not in ops  # the soft-NMS rounds: one ONNX Scan


@pytest.mark.slow
def test_dynamic_batch_and_tools(tmp_path, calibrate_head):
    """export_onnx.py --dynamic-batch on a trained-like quickstart model: padded outputs and num_dets equal
    predict's per image; onnx_demo.py draws with the class names stored in the model."""
    torch.manual_seed(0)
    config = REPO / 'configs' / 'quickstart' / 'ssd_shapes.py'
    model = init_detector(str(config), None)
    images = np.stack(shapes_images(3, size=256))
    calibrate_head(model, preprocess(build_graph(model).spec, torch.from_numpy(images[:1]))[0], (0.0, 2.0))
    ckpt = tmp_path / 'model.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': {'classes': ('circle', 'square',
                                                                                        'triangle', 'star')}}}, ckpt)
    out = tmp_path / 'batched.onnx'
    cv2.imwrite(str(tmp_path / 'shape.png'), images[0])
    text = run_tool('export_onnx.py', str(config), str(ckpt), '--out', str(out), '--dynamic-batch', '--max-per-img',
                    '50', '--verify', str(tmp_path / 'shape.png'))
    assert 'verify on' in text and 'onnxruntime vs PyTorch' in text
    boxes, scores, labels, num = session(out).run(None, {'image': images})
    assert boxes.shape == (3, 50, 4) and scores.shape == (3, 50) and labels.shape == (3, 50) and num.shape == (3,)
    refs = reference(model, build_graph(model).spec, images)
    for i, ref in enumerate(refs):
        ref = {k: v[:50] for k, v in ref.items()}
        k = int(num[i])
        assert k == len(ref['boxes']) > 0
        assert (labels[i, k:] == -1).all() and not scores[i, k:].any() and not boxes[i, k:].any()
        box, score = paired_differences((boxes[i, :k], scores[i, :k], labels[i, :k]), ref)
        assert box < BOX_TOL and score < SCORE_TOL

    text = run_tool('onnx_demo.py', str(out), str(tmp_path / 'shape.png'), '--out', str(tmp_path / 'vis.png'),
                    '--score-thr', '0.0')
    vis = cv2.imread(str(tmp_path / 'vis.png'))
    assert vis.shape == images[0].shape and (vis != images[0]).any()  # boxes drawn
    assert f'{int(num[0])} detections >= 0.0' in text


def test_tools_name_the_bad_argument(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_tool('export_onnx.py', 'config.py', 'model.pth', '--out', str(tmp_path / 'm.onnx'), '--max-per-img', '0')
    assert '--max-per-img must be >= 1, got 0' in capsys.readouterr().err
    with pytest.raises(SystemExit, match='checkpoint not found: missing.pth'):
        run_tool('export_onnx.py', str(REPO / 'configs' / 'quickstart' / 'ssd_shapes.py'), 'missing.pth', '--out',
                 str(tmp_path / 'm.onnx'))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # run as __main__: one line, not a traceback
        run_tool('onnx_demo.py', 'missing.onnx', str(tmp_path))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == 'error: ONNX model not found: missing.onnx\n'


def test_export_refuses_soft_nms_without_cap_and_batch_without_cap():
    torch.manual_seed(0)
    model = init_detector(str(REPO / 'configs' / 'm2det' / 'm2det320_vgg_coco.py'), None,
                          cfg_options={'model.neck.planes': 32, 'model.neck.num_levels': 1,
                                       'model.test_cfg.max_per_class': 0})
    with pytest.raises(ValueError, match='max_per_class must be > 0'):
        build_graph(model)
    with pytest.raises(ValueError, match='give max_dets'):
        build_graph(model, batched=True, hard_nms=True)
    assert build_graph(model, batched=True, hard_nms=True, max_dets=7).max_dets == 7


def test_onnx_packages_are_optional(monkeypatch):
    """detkit (inference, the deploy graph) imports none of the extras; the tools name the missing one."""
    code = ('import sys, detkit.apis, detkit.deploy; '
            'print(sorted(m for m in ("onnx", "onnxruntime", "onnxscript") if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, 'PYTHONPATH': str(REPO)})
    assert out.stdout.strip() == '[]'
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import onnxruntime raises ImportError
    with pytest.raises(ImportError, match='onnxruntime is not installed.*requirements-deploy.txt'):
        run_tool('onnx_demo.py', 'model.onnx', 'photo.jpg')


def run_tool(name: str, *argv: str) -> str:
    """``python tools/deployment/NAME ARGV`` in this process; its stdout."""
    path = REPO / 'tools' / 'deployment' / name
    old = sys.argv
    out = io.StringIO()
    try:
        sys.argv = [str(path), *argv]
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(path), run_name='__main__')
    finally:
        sys.argv = old
    return out.getvalue()


@pytest.mark.parametrize('h, w, rounding, size', [(1, 3000, 'half_up', (1, 1333)), (3000, 1, 'half_up', (1333, 1)),
                                                  (1, 1500, 'floor', (1, 1333))])
def test_preprocess_never_makes_a_side_of_zero_pixels(h, w, rounding, size):
    """The graph's keep-ratio resize clamps a side that rounds to 0 px to 1 px, as the Python pipeline does."""
    spec = PreprocessSpec(scale=(1333, 800), keep_ratio=True, size_rounding=rounding, pad_size_divisor=32)
    x, new_size, scale = preprocess(spec, torch.full((2, h, w, 3), 7, dtype=torch.uint8))
    assert new_size == size and x.shape == (2, 3, -(-size[0] // 32) * 32, -(-size[1] // 32) * 32)
    assert (x[:, :, :size[0], :size[1]] == 7).all()
    assert scale.tolist() == [np.float32(size[1] / w), np.float32(size[0] / h)]
