"""Run a detector on an image, a folder of images or a video and write annotated copies.

    python tools/demo.py CONFIG CHECKPOINT photo.jpg                      # -> outputs/demo/photo.jpg
    python tools/demo.py CONFIG CHECKPOINT images/ --out vis/             # every image in the folder
    python tools/demo.py CONFIG CHECKPOINT clip.mp4 --out clip_det.mp4    # annotated video (mp4v)
"""
from __future__ import annotations

import argparse
import os
import os.path as osp

import cv2

from detkit.apis import inference_detector, init_detector
from detkit.datasets.transforms import ImageLoadError, imread
from detkit.utils.visualization import draw_detections

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_EXTS = ('.mp4', '.avi', '.mov', '.mkv', '.m4v', '.webm', '.mpg', '.mpeg')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Detect objects in images or a video')
    p.add_argument('config', help='config file')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('input', help='an image, a folder of images, or a video')
    p.add_argument('--out', default='outputs/demo',
                   help='output folder (images), or a file: an image path for one image, a .mp4 for a video')
    p.add_argument('--score-thr', type=float, default=0.3, help='draw detections scoring at least this')
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--fast', choices=['exact', 'bf16'], default=None,
                   help='faster CPU inference: exact (batch norms folded, channels-last: the same detections) or '
                        'bf16 (also bfloat16 autocast: faster, not exact; see detkit/apis/fast.py)')
    return p.parse_args(argv)


def _image_out_path(out: str, src: str, single: bool) -> str:
    if single and out.lower().endswith(IMAGE_EXTS):
        return out
    return osp.join(out, osp.basename(src))


def run_images(model, paths: list[str], out: str, score_thr: float, single: bool) -> list[str]:
    """Detect and draw on each image; returns the files written (unreadable inputs are skipped and named)."""
    classes = model.dataset_meta.get('classes')
    written = []
    for path in paths:
        try:
            img = imread(path)  # a truncated JPEG is unreadable too, not drawn half grey
        except ImageLoadError as err:
            print(f'skipped {path}: {err.reason}')
            continue
        det = inference_detector(model, img)
        vis = draw_detections(img, det['boxes'], det['labels'], det['scores'], classes, score_thr)
        dst = _image_out_path(out, path, single)
        os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
        cv2.imwrite(dst, vis)
        n = int((det['scores'] >= score_thr).sum())
        print(f'{path}: {n} detections >= {score_thr} -> {dst}')
        written.append(dst)
    return written


def run_video(model, path: str, out: str, score_thr: float) -> str:
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise SystemExit(f'cannot open video {path}')
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    dst = out if out.lower().endswith(VIDEO_EXTS) else osp.join(out, osp.splitext(osp.basename(path))[0] + '.mp4')
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    writer = cv2.VideoWriter(dst, cv2.VideoWriter_fourcc(*'mp4v'), fps, (w, h))
    classes = model.dataset_meta.get('classes')
    frames = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            det = inference_detector(model, frame)
            writer.write(draw_detections(frame, det['boxes'], det['labels'], det['scores'], classes, score_thr))
            frames += 1
    finally:
        cap.release()
        writer.release()
    if frames == 0:
        if osp.exists(dst):
            os.remove(dst)
        raise SystemExit(f'no input could be processed: {path} yielded no frames')
    print(f'{path}: {frames} frames -> {dst}')
    return dst


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = init_detector(args.config, args.checkpoint, device=args.device, fast=args.fast)
    src = args.input
    if osp.isdir(src):
        paths = sorted(osp.join(src, f) for f in os.listdir(src) if f.lower().endswith(IMAGE_EXTS))
        if not paths:
            raise SystemExit(f'no images ({", ".join(IMAGE_EXTS)}) in {src}')
        single = False
    elif not osp.isfile(src):
        raise SystemExit(f'input not found: {src}')
    elif src.lower().endswith(VIDEO_EXTS):
        run_video(model, src, args.out, args.score_thr)
        return
    else:
        paths, single = [src], True
    if not run_images(model, paths, args.out, args.score_thr, single=single):
        # exit non-zero: a script that runs the demo must not take "nothing drawn" for success
        raise SystemExit(f'no input could be processed; unreadable: {", ".join(paths)}')


if __name__ == '__main__':
    main()
