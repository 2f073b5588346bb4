"""Run an exported detector (tools/deployment/export_onnx.py) with onnxruntime on images and draw the detections.

    python tools/deployment/onnx_demo.py model.onnx photo.jpg                 # -> outputs/onnx_demo/photo.jpg
    python tools/deployment/onnx_demo.py model.onnx images/ --out vis/ --score-thr 0.5

The graph holds the whole detector: onnxruntime runs it, detkit only reads the images and draws the boxes. Class
names come from the model's ``detkit.classes`` metadata. A batched export (``--dynamic-batch``) is run one image at
a time.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import time

import numpy as np

from detkit.datasets.transforms import ImageLoadError, imread
from detkit.deploy import optional_import
from detkit.utils.errors import run_tool
from detkit.utils.file_io import OutputPathError, check_not_inputs, check_writable, imwrite
from detkit.utils.visualization import draw_detections

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Detect objects with an exported ONNX detector')
    p.add_argument('model', help='.onnx file from tools/deployment/export_onnx.py')
    p.add_argument('input', help='an image or a folder of images')
    p.add_argument('--out', default='outputs/onnx_demo', help='output folder, or an image path for one image')
    p.add_argument('--score-thr', type=float, default=0.3, help='draw detections scoring at least this')
    p.add_argument('--threads', type=int, default=0, help='onnxruntime intra-op threads (0: its default)')
    return p.parse_args(argv)


class OnnxDetector:
    """An exported detector in onnxruntime: ``detector(bgr_uint8_image) -> (boxes, scores, labels)``.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (0: onnxruntime's default).

    Raises:
        FileNotFoundError: naming ``path`` when it does not exist.
        ValueError: naming ``path`` when onnxruntime cannot load it (truncated, corrupt, not an ONNX model).
    """

    def __init__(self, path: str, threads: int = 0) -> None:
        ort = optional_import('onnxruntime')
        if not osp.isfile(path):
            raise FileNotFoundError(f'ONNX model not found: {path}')
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        except Exception as err:  # onnxruntime's own exception types (InvalidProtobuf, Fail, InvalidGraph, ...)
            reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            raise ValueError(f'cannot load ONNX model {path} ({osp.getsize(path)} bytes): truncated, corrupt or not '
                             f'an ONNX model ({reason}); export it again with tools/deployment/export_onnx.py'
                             ) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.classes: list[str] = json.loads(meta.get('detkit.classes', '[]'))
        self.batched = len(self.session.get_inputs()[0].shape) == 4

    def __call__(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'the image must be uint8 (H, W, 3) BGR, got {img.dtype} {img.shape}')
        if not self.batched:
            boxes, scores, labels = self.session.run(None, {'image': img})
            return boxes, scores, labels
        boxes, scores, labels, num = self.session.run(None, {'image': img[None]})
        return boxes[0, :num[0]], scores[0, :num[0]], labels[0, :num[0]]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        detector = OnnxDetector(args.model, args.threads)
    except ValueError as err:  # a file onnxruntime cannot load: one line naming it
        raise SystemExit(str(err)) from None
    if osp.isdir(args.input):
        paths = sorted(osp.join(args.input, f) for f in os.listdir(args.input) if f.lower().endswith(IMAGE_EXTS))
        if not paths:
            raise SystemExit(f'no images ({", ".join(IMAGE_EXTS)}) in {args.input}')
    elif osp.isfile(args.input):
        paths = [args.input]
    else:
        raise SystemExit(f'input not found: {args.input}')
    single = len(paths) == 1 and args.out.lower().endswith(IMAGE_EXTS)
    dsts = [args.out if single else osp.join(args.out, osp.basename(path)) for path in paths]
    try:  # before the work: the outputs must be writable and must not be any of the inputs
        check_not_inputs(dsts, [*paths, args.model], f'--out {args.out}')
        check_writable(args.out, directory=not single, option='--out')
    except OutputPathError as err:
        raise SystemExit(str(err)) from None
    written = 0
    for path, dst in zip(paths, dsts):
        try:
            img = imread(path)
        except ImageLoadError as err:
            print(f'skipped {path}: {err.reason}')
            continue
        start = time.perf_counter()
        boxes, scores, labels = detector(img)
        ms = (time.perf_counter() - start) * 1e3
        vis = draw_detections(img, boxes, labels, scores, detector.classes or None, args.score_thr)
        os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
        try:
            imwrite(dst, vis)
        except OSError as err:
            raise SystemExit(str(err)) from None
        print(f'{path}: {int((scores >= args.score_thr).sum())} detections >= {args.score_thr} in {ms:.0f} ms '
              f'-> {dst}')
        written += 1
    if not written:
        raise SystemExit(f'no input could be processed; unreadable: {", ".join(paths)}')


if __name__ == '__main__':
    run_tool(main)
