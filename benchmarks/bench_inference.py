"""End-to-end CPU inference, from a decoded image to detections, in images/s: detkit (eager, fast paths,
onnxruntime) against torchvision with the same weights.

    python benchmarks/bench_inference.py [--cases ssd300_b1 ssd300_b8 retinanet_b1 m2det_b1] [--iters 5]
                                         [--threads N] [--jit] [--compile] [--quick]

Every row starts from the same decoded uint8 BGR arrays (``cv2.imread``'s: the two 480x640 shared photos, their
mirror images and those shifted, 8 distinct arrays) and ends with boxes, scores and labels in those images' pixels:

* **torchvision**: BGR -> RGB float tensor in 0..1, then the model (its transform resizes and normalises, then
  ``postprocess_detections`` and the boxes mapped back);
* **detkit eager**: ``inference_detector`` (the config's Python test pipeline, then ``predict``);
* **detkit fast='exact'** / **fast='bf16'**: the same after ``init_detector(..., fast=...)`` (``detkit.apis.fast``:
  batch norms folded and channels-last; bf16 adds bfloat16 autocast on the network, not exact);
* **detkit exact + jit.freeze** (``--jit``): the 'exact' network traced, frozen and ``optimize_for_inference``
  (oneDNN fusions), pipeline and post-processing as eager;
* **detkit exact + torch.compile** (``--compile``): the 'exact' network through ``torch.compile`` (inductor, with
  ``freezing``: weights folded into the graph, oneDNN convolutions and fusions);
* **onnxruntime**: the graph ``tools/deployment/export_onnx.py`` writes (pre-processing, network, NMS), with as
  many intra-op threads as torch (batch 8: the ``--dynamic-batch`` export).

Models: SSD300-VGG16 (``configs/ssd/ssd300_coco_tv.py``) and RetinaNet-R50-FPN at 800 (``retinanet_r50_fpn_coco_tv
.py``) hold torchvision's ``ssd300_vgg16`` / ``retinanet_resnet50_fpn`` random weights converted by detkit's
converters, so both libraries compute the same detections (classification biases perturbed so that there are
hundreds to post-process); M2Det320 (``m2det320_vgg_coco.py``, soft-NMS) has no torchvision peer. One-time costs
(export, tracing, compilation) are printed, not timed. Rows run interleaved, round by round, so that load from
other processes hits all alike; medians. The last lines are a markdown table to paste into BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import interleaved_median_times, machine, markdown_table  # noqa: E402

from detkit.apis import inference_detector, init_detector  # noqa: E402
from detkit.apis.fast import make_fast  # noqa: E402
from detkit.deploy import export_onnx, paired_differences  # noqa: E402
from detkit.models.utils.weights import (convert_torchvision_retinanet_resnet50_fpn,  # noqa: E402
                                         convert_torchvision_ssd300_vgg16)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
CASES = {'ssd300_b1': ('ssd300', 1), 'ssd300_b8': ('ssd300', 8), 'retinanet_b1': ('retinanet', 1),
         'm2det_b1': ('m2det', 1)}  # name: (model, batch)
TITLES = {'ssd300': 'SSD300-VGG16', 'retinanet': 'RetinaNet-R50-FPN, 800', 'm2det': 'M2Det320-VGG16 (soft-NMS)'}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--cases', nargs='+', choices=list(CASES), default=list(CASES))
    p.add_argument('--iters', type=int, default=5, help='timed rounds per case (default 5)')
    p.add_argument('--threads', type=int, default=None, help='torch and onnxruntime intra-op threads')
    p.add_argument('--jit', action='store_true', help="also time torch.jit.freeze of the 'exact' network")
    p.add_argument('--compile', action='store_true', help="also time torch.compile of the 'exact' network")
    p.add_argument('--quick', action='store_true', help='a smoke run: 1 timed round, batch 8 -> 2, no --jit/--compile')
    args = p.parse_args(argv)
    if args.iters < 1:
        p.error(f'--iters must be >= 1, got {args.iters}')
    if args.quick:
        args.iters, args.jit, args.compile = 1, False, False
    return args


def shared_images() -> list[np.ndarray]:
    """Eight distinct 480x640 BGR arrays: the shared 480x640 photos, their mirror images, and those shifted."""
    root = os.environ.get('DETKIT_SHARED_DATA', os.path.join(REPO, '..', 'shared', 'data'))
    folder = next((f for f in (os.path.join(root, 'images'), root) if os.path.isdir(f)), None)
    if folder is None:
        raise SystemExit(f'the shared photos are not in {root}/images: set DETKIT_SHARED_DATA to their folder')
    photos = [cv2.imread(os.path.join(folder, f)) for f in sorted(os.listdir(folder)) if f.endswith('.jpg')]
    base = [p for p in photos if p.shape == (480, 640, 3)]
    if not base:
        raise SystemExit(f'no 480x640 JPEG in {folder}')
    base += [np.ascontiguousarray(p[:, ::-1]) for p in base]
    while len(base) < 8:
        base += [np.roll(p, 32 * len(base), axis=1) for p in base]
    return base[:8]


def build(kind: str) -> tuple[torch.nn.Module | None, torch.nn.Module]:
    """(torchvision model or None, the detkit model with the same weights), eval mode."""
    torch.manual_seed(0)
    if kind == 'm2det':
        model = init_detector(os.path.join(REPO, 'configs/m2det/m2det320_vgg_coco.py'), None)
        with torch.no_grad():  # sane boxes and a few thousand (anchor, class) pairs above the 0.1 threshold
            for conv in model.bbox_head.cls_convs:
                conv.weight.mul_(1e-3)
                conv.bias.normal_(0.0, 2.0)
            for conv in model.bbox_head.reg_convs:
                conv.weight.mul_(1e-3)
        return None, model
    detection = torchvision.models.detection
    if kind == 'ssd300':
        tv = detection.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=91).eval()
        with torch.no_grad():
            for conv in tv.head.classification_head.module_list:
                conv.weight.mul_(0.1)
                conv.bias.normal_(0.0, 2.0)
        config, convert = 'configs/ssd/ssd300_coco_tv.py', convert_torchvision_ssd300_vgg16
    else:
        tv = detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).eval()
        with torch.no_grad():
            tv.head.classification_head.cls_logits.bias.normal_(-3.0, 1.0)
        config, convert = 'configs/retinanet/retinanet_r50_fpn_coco_tv.py', convert_torchvision_retinanet_resnet50_fpn
    model = init_detector(os.path.join(REPO, config), None)
    model.load_state_dict(convert(tv.state_dict()))
    return tv, model


def network_input(model: torch.nn.Module, imgs: list[np.ndarray]) -> torch.Tensor:
    """The batch ``predict`` receives for ``imgs`` (captured from one eager call): the example to trace."""
    seen = []
    handle = model.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        inference_detector(model, imgs)
    finally:
        handle.remove()
    return seen[0]


def with_network(model: torch.nn.Module, forward: Callable) -> torch.nn.Module:
    """A shallow copy of ``model`` whose network forward (``predict`` calls ``self(images)``) is ``forward``."""
    out = copy.copy(model)
    object.__setattr__(out, 'forward', forward)  # an attribute, not a registered submodule (a ScriptModule would be)
    return out


def jit_frozen(exact: torch.nn.Module, example: torch.Tensor) -> tuple[torch.nn.Module, float]:
    start = time.perf_counter()
    with torch.no_grad():
        traced = torch.jit.trace(exact, example.contiguous(memory_format=torch.channels_last), strict=False)
        net = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        net(example)  # the first calls re-optimise
        net(example)
    return with_network(exact, net), time.perf_counter() - start


def compiled(exact: torch.nn.Module, example: torch.Tensor) -> tuple[torch.nn.Module, float]:
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # weights become constants: oneDNN weight packing, conv + activation fusions
    start = time.perf_counter()
    net = torch.compile(exact.forward, dynamic=False)
    with torch.no_grad():
        net(example)
    return with_network(exact, net), time.perf_counter() - start


def ort_runner(model: torch.nn.Module, batched: bool, folder: str) -> tuple[Callable, torch.nn.Module, float]:
    """A function ``images -> [(boxes, scores, labels)]`` running the exported graph, the graph, the export time."""
    import onnxruntime as ort

    path = os.path.join(folder, f'{type(model).__name__}_{int(batched)}.onnx')
    start = time.perf_counter()
    graph = export_onnx(model, path, dynamic_batch=batched)
    seconds = time.perf_counter() - start
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])

    def run(imgs: list[np.ndarray]) -> list[tuple]:
        if not batched:
            return [tuple(sess.run(None, {'image': img})) for img in imgs]
        boxes, scores, labels, num = sess.run(None, {'image': np.stack(imgs)})
        return [(b[:k], s[:k], lab[:k]) for b, s, lab, k in zip(boxes, scores, labels, num)]
    return run, graph, seconds


def ort_agreement(dets: list[tuple], graph: torch.nn.Module, imgs: list[np.ndarray]) -> str:
    """onnxruntime against the same graph run by PyTorch on the same input (the whole batch for a batched graph:
    a batch of one rounds the convolutions differently, enough to flip a near-tie in NMS)."""
    box = score = 0.0
    with torch.no_grad():
        if graph.batched:
            out = [t.numpy() for t in graph(torch.from_numpy(np.stack(imgs)))]
            refs = [[r[i][:out[3][i]] for r in out[:3]] for i in range(len(imgs))]
        else:
            refs = [[t.numpy() for t in graph(torch.from_numpy(img))] for img in imgs]
        for ours, ref in zip(dets, refs):
            try:
                b, s = paired_differences(ours, ref)
            except ValueError as err:
                return f'onnxruntime and PyTorch DISAGREE: {err}'
            box, score = max(box, b), max(score, s)
    return (f'onnxruntime vs PyTorch: {sum(len(d[0]) for d in dets)} detections, boxes within {box:.1e} px, scores '
            f'within {score:.1e}')


def run_case(name: str, args: argparse.Namespace, images: list[np.ndarray], models: dict,
             folder: str) -> tuple[list[list[str]], list[str]]:
    """Time one case; its table rows and notes."""
    kind, batch = CASES[name]
    if args.quick and batch > 2:
        batch = 2
    if kind not in models:
        models[kind] = build(kind)
    tv, model = models[kind]
    imgs = images[:batch]
    exact = make_fast(copy.deepcopy(model), 'exact')
    bf16 = make_fast(copy.deepcopy(model), 'bf16')
    notes: list[str] = []
    rows: list[tuple[str, Callable[[], object]]] = []
    if tv is not None:
        tv_inputs = [torch.from_numpy(np.ascontiguousarray(im[..., ::-1])).permute(2, 0, 1) for im in imgs]

        def run_tv():
            with torch.no_grad():
                return tv([x.float() / 255 for x in tv_inputs])
        rows.append(('torchvision', run_tv))
    rows += [('detkit eager', lambda: inference_detector(model, imgs)),
             ("detkit fast='exact'", lambda: inference_detector(exact, imgs)),
             ("detkit fast='bf16'", lambda: inference_detector(bf16, imgs))]
    if args.jit or args.compile:
        example = network_input(exact, imgs)
        for flag, label, make in ((args.jit, 'jit.freeze', jit_frozen), (args.compile, 'torch.compile', compiled)):
            if flag:
                fast_model, seconds = make(exact, example)
                rows.append((f"detkit 'exact' + {label}", lambda m=fast_model: inference_detector(m, imgs)))
                box, score = (max(d) for d in zip(*map(paired_differences, inference_detector(fast_model, imgs),
                                                       inference_detector(exact, imgs))))
                notes.append(f"{label} took {seconds:.0f} s, its detections are 'exact''s within {box:.1e} px, "
                             f'{score:.1e}')
    run_ort, graph, seconds = ort_runner(model, batch > 1, folder)
    rows.append(('onnxruntime (exported graph)', lambda: run_ort(imgs)))
    notes += [f'ONNX export took {seconds:.0f} s', ort_agreement(run_ort(imgs), graph, imgs)]
    with torch.no_grad():
        medians = interleaved_median_times([fn for _, fn in rows], args.iters)
    seconds_of = dict(zip([r for r, _ in rows], medians))
    title = f'{TITLES[kind]}, batch {batch}'
    table = []
    for row, t in seconds_of.items():
        vs_tv = f'{seconds_of["torchvision"] / t:.2f}x' if tv is not None else 'n/a'
        table.append([title, row, f'{batch / t:.2f}', vs_tv, f'{seconds_of["detkit eager"] / t:.2f}x'])
    print(f'\n{name}: {batch} x {imgs[0].shape[1]}x{imgs[0].shape[0]} images; {"; ".join(notes)}')
    print(markdown_table(['case', 'path', 'images/s', 'vs torchvision', 'vs detkit eager'], table), flush=True)
    return table, [f'{name}: {n}' for n in notes]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import onnxruntime

    header = (f'{machine()}; torchvision {torchvision.__version__}, onnxruntime {onnxruntime.__version__}; median of '
              f'{args.iters} rounds{" (--quick)" if args.quick else ""}')
    print(f'{header}; load average {os.getloadavg()[0]:.1f} at the start', flush=True)
    images = shared_images()
    table: list[list[str]] = []
    notes: list[str] = []
    models: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        for case in args.cases:
            rows, case_notes = run_case(case, args, images, models, folder)
            table += rows
            notes += case_notes
    print(f'\nload average {os.getloadavg()[0]:.1f} at the end\n\n--- markdown ---\n{header}\n')
    print(markdown_table(['case', 'path', 'images/s', 'vs torchvision', 'vs detkit eager'], table))
    print('\n' + '\n'.join(f'- {n}' for n in notes))


if __name__ == '__main__':
    main()
