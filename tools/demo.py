"""Run a detector on an image, a folder of images or a video and write annotated copies.

    python tools/demo.py CONFIG CHECKPOINT photo.jpg                      # -> outputs/demo/photo.jpg
    python tools/demo.py CONFIG CHECKPOINT images/ --out vis/             # every image in the folder
    python tools/demo.py CONFIG CHECKPOINT clip.mp4 --out clip_det.mp4    # annotated video (mp4v)

Before the model is loaded, the outputs are checked: none may be one of the inputs (refused, naming both paths) and
the destination must be writable. A write that fails is an error naming the file; a video replaces its output only
once all its frames are written.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import tempfile

import cv2

from detkit.apis import inference_detector, init_detector
from detkit.datasets.transforms import ImageLoadError, imread
from detkit.utils.errors import run_tool
from detkit.utils.file_io import OutputPathError, check_not_inputs, check_writable, imwrite, open_video_writer
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
        imwrite(dst, vis)
        n = int((det['scores'] >= score_thr).sum())
        print(f'{path}: {n} detections >= {score_thr} -> {dst}')
        written.append(dst)
    return written


def _video_out_path(out: str, src: str) -> str:
    return out if out.lower().endswith(VIDEO_EXTS) else osp.join(out, osp.splitext(osp.basename(src))[0] + '.mp4')


def run_video(model, path: str, dst: str, score_thr: float) -> str:
    """Detect and draw on every frame of the video ``path`` into the mp4v video ``dst``; returns ``dst``.

    The frames go to a temporary file next to ``dst`` that replaces it only once every frame is written: a video
    that yields no frame, or a failure part way, leaves ``dst`` as it was.

    Raises:
        SystemExit: the video cannot be opened or yields no frames.
        OSError: naming the file when the video writer cannot be opened (before any frame is processed).
    """
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise SystemExit(f'cannot open video {path}')
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    directory = osp.dirname(osp.abspath(dst))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{osp.basename(dst)}.', suffix=osp.splitext(dst)[1])
    os.close(fd)
    classes = model.dataset_meta.get('classes')
    frames = 0
    try:
        try:
            writer = open_video_writer(tmp, fps, (w, h))
        except OSError:
            raise OSError(f'cannot open {dst} for writing a video of {w}x{h} frames') from None
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                det = inference_detector(model, frame)
                writer.write(draw_detections(frame, det['boxes'], det['labels'], det['scores'], classes, score_thr))
                frames += 1
        finally:
            writer.release()
        if frames == 0:
            raise SystemExit(f'no input could be processed: {path} yielded no frames')
        os.replace(tmp, dst)
    finally:
        cap.release()
        if osp.exists(tmp):  # only the file this run created
            os.remove(tmp)
    print(f'{path}: {frames} frames -> {dst}')
    return dst


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    src = args.input
    video = False
    if osp.isdir(src):
        paths = sorted(osp.join(src, f) for f in os.listdir(src) if f.lower().endswith(IMAGE_EXTS))
        if not paths:
            raise SystemExit(f'no images ({", ".join(IMAGE_EXTS)}) in {src}')
        single = False
    elif not osp.isfile(src):
        raise SystemExit(f'input not found: {src}')
    elif src.lower().endswith(VIDEO_EXTS):
        paths, single, video = [src], True, True
    else:
        paths, single = [src], True
    # before loading the model: the outputs must be writable and must not be any of the inputs
    inputs = [*paths, args.config, args.checkpoint]
    try:
        if video:
            check_not_inputs([_video_out_path(args.out, src)], inputs, f'--out {args.out}')
            check_writable(_video_out_path(args.out, src), directory=False, option='--out')
        else:
            dsts = [_image_out_path(args.out, p, single) for p in paths]
            check_not_inputs(dsts, inputs, f'--out {args.out}')
            if single and dsts[0] == args.out:
                check_writable(args.out, directory=False, option='--out')
            else:
                check_writable(args.out, directory=True, option='--out')
    except OutputPathError as err:
        raise SystemExit(str(err)) from None
    model = init_detector(args.config, args.checkpoint, device=args.device, fast=args.fast)
    try:
        if video:
            run_video(model, src, _video_out_path(args.out, src), args.score_thr)
            return
        written = run_images(model, paths, args.out, args.score_thr, single=single)
    except OSError as err:  # a write that failed: one line, not "-> path" for a file that is not there
        raise SystemExit(str(err)) from None
    if not written:
        # exit non-zero: a script that runs the demo must not take "nothing drawn" for success
        raise SystemExit(f'no input could be processed; unreadable: {", ".join(paths)}')


if __name__ == '__main__':
    run_tool(main)
