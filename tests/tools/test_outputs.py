"""The tools never write over their inputs, refuse an unwritable destination before the work, report a write that
failed, and keep --show-dir names unique (issue 17, items 1, 10, 17, 18, 19, 21).

The tools run in-process (``main(argv)``) on the toy detector of tests/engine/toy.py with untrained weights: what is
written and where is the subject, not the detections.
"""
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import toy
import torch
from onnx import TensorProto, helper

from detkit.registry import DATASETS, MODELS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def toy_model(tmp_path_factory):
    """(config path, checkpoint path, data folder of 4 toy images) with an untrained toy detector."""
    root = tmp_path_factory.mktemp('outputs')
    cfg = toy.write_toy_config(str(root / 'toy_cfg.py'), str(root / 'unused'), data_root=str(root / 'data'))
    torch.manual_seed(0)
    model = MODELS.build(dict(type='ToyDetector', num_classes=2, width=8))
    ckpt = root / 'toy.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': {'classes': toy.CLASSES}}}, ckpt)
    data = root / 'data'
    data.mkdir()
    for i in range(4):
        cv2.imwrite(str(data / f'toy_{i:03d}.png'), toy.make_item(i)[0])
    return root, cfg, str(ckpt), data


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def write_video(path: Path, frames: int = 3) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 5, (80, 60))
    for i in range(frames):
        writer.write(toy.make_item(i)[0])
    writer.release()


# --------------------------------------------------------------------------------------- demo.py (items 1, 10)
def test_demo_refuses_to_write_over_its_input_video_or_images(load_tool, toy_model, tmp_path):
    root, cfg, ckpt, data = toy_model
    demo = load_tool('tools/demo.py')
    videos = tmp_path / 'v'
    videos.mkdir()
    write_video(videos / 'long.mp4')
    before = snapshot(videos)
    with pytest.raises(SystemExit) as err:
        demo.main([cfg, ckpt, str(videos / 'long.mp4'), '--out', f'{videos}/'])
    assert str(err.value) == (f'--out {videos}/long.mp4: writing {videos}/long.mp4 would overwrite the input '
                              f'{videos / "long.mp4"}; choose an output outside the inputs')
    assert snapshot(videos) == before

    before = snapshot(data)
    with pytest.raises(SystemExit, match=f'--out {data}: writing {data / "toy_000.png"} would overwrite the input '
                                         f'{data / "toy_000.png"}'):
        demo.main([cfg, ckpt, str(data), '--out', str(data)])
    with pytest.raises(SystemExit, match='would overwrite the input'):
        demo.main([cfg, ckpt, str(data / 'toy_001.png'), '--out', str(data / 'toy_001.png')])
    assert snapshot(data) == before


def test_demo_reports_failed_writes_and_unwritable_destinations(load_tool, toy_model, tmp_path, monkeypatch, capsys):
    root, cfg, ckpt, data = toy_model
    demo = load_tool('tools/demo.py')
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    # checked before the model is loaded: a checkpoint that does not exist is never reached
    with pytest.raises(SystemExit, match=f'--out {blocker}/vis: cannot create .*: {blocker} is a file'):
        demo.main([cfg, str(tmp_path / 'missing.pth'), str(data), '--out', str(blocker / 'vis')])
    (tmp_path / 'dir.jpg').mkdir()
    with pytest.raises(SystemExit, match=f'--out {tmp_path / "dir.jpg"} is a directory; give a file name'):
        demo.main([cfg, str(tmp_path / 'missing.pth'), str(data / 'toy_000.png'), '--out', str(tmp_path / 'dir.jpg')])
    # OpenCV writing nothing (a read-only folder) is an error naming the file, not "-> path" and exit 0
    monkeypatch.setattr(cv2, 'imwrite', lambda *args, **kwargs: False)
    with pytest.raises(SystemExit, match=f'cannot write image {tmp_path / "vis" / "toy_000.png"}'):
        demo.main([cfg, ckpt, str(data), '--out', str(tmp_path / 'vis')])
    assert '-> ' not in capsys.readouterr().out


def test_demo_video_writer_is_checked_before_any_frame(load_tool, toy_model, tmp_path, monkeypatch):
    root, cfg, ckpt, data = toy_model
    demo = load_tool('tools/demo.py')
    write_video(tmp_path / 'clip.mp4')

    class ClosedWriter:
        def __init__(self, *args, **kwargs):
            pass

        def isOpened(self):  # noqa: N802 (OpenCV's name)
            return False

        def release(self):
            pass

    calls = []
    monkeypatch.setattr(cv2, 'VideoWriter', ClosedWriter)
    monkeypatch.setattr(demo, 'inference_detector', lambda *args: calls.append(args))
    dst = tmp_path / 'out' / 'clip_det.mp4'
    with pytest.raises(SystemExit, match=f'cannot open {dst} for writing a video of 80x60 frames'):
        demo.main([cfg, ckpt, str(tmp_path / 'clip.mp4'), '--out', str(dst)])
    assert not calls and os.listdir(tmp_path / 'out') == []  # no frame processed, no file left


def test_demo_video_without_frames_leaves_an_existing_output(load_tool, toy_model, tmp_path, monkeypatch):
    """The video is written to a temporary file that replaces the output only when complete: a source that opens
    but yields no frame leaves the earlier output as it was (it used to be truncated, then deleted)."""
    root, cfg, ckpt, data = toy_model
    demo = load_tool('tools/demo.py')
    write_video(tmp_path / 'clip.mp4')
    dst = tmp_path / 'det.mp4'
    demo.main([cfg, ckpt, str(tmp_path / 'clip.mp4'), '--out', str(dst)])
    written = dst.read_bytes()
    assert len(written) > 0

    class NoFrames:  # a video that opens and then cannot be read
        def __init__(self, path):
            pass

        def isOpened(self):  # noqa: N802 (OpenCV's name)
            return True

        def get(self, prop):
            return {cv2.CAP_PROP_FPS: 5.0, cv2.CAP_PROP_FRAME_WIDTH: 80, cv2.CAP_PROP_FRAME_HEIGHT: 60}[prop]

        def read(self):
            return False, None

        def release(self):
            pass

    monkeypatch.setattr(cv2, 'VideoCapture', NoFrames)
    with pytest.raises(SystemExit, match=f'no input could be processed: {tmp_path / "clip.mp4"} yielded no frames'):
        demo.main([cfg, ckpt, str(tmp_path / 'clip.mp4'), '--out', str(dst)])
    assert dst.read_bytes() == written
    assert sorted(os.listdir(tmp_path)) == ['clip.mp4', 'det.mp4']  # no temporary file left


# ----------------------------------------------------------------------------------- onnx_demo.py (items 1, 10, 19)
def tiny_onnx(path: Path) -> None:
    """An ONNX "detector" with onnx_demo's interface: uint8 (H, W, 3) in, one fixed detection out."""
    outputs = [('boxes', TensorProto.FLOAT, [1, 4], [5.0, 5.0, 40.0, 30.0]), ('scores', TensorProto.FLOAT, [1], [0.9]),
               ('labels', TensorProto.INT64, [1], [1])]
    nodes = [helper.make_node('Constant', [], [name], value=helper.make_tensor(name + '_v', dtype, shape, values))
             for name, dtype, shape, values in outputs]
    graph = helper.make_graph(nodes, 'tiny', [helper.make_tensor_value_info('image', TensorProto.UINT8, [None, None, 3])],
                              [helper.make_tensor_value_info(n, d, s) for n, d, s, _ in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_onnx_demo_refuses_its_inputs_reports_failed_writes_and_truncated_models(load_tool, toy_model, tmp_path,
                                                                                 monkeypatch):
    root, cfg, ckpt, data = toy_model
    onnx_demo = load_tool('tools/deployment/onnx_demo.py')
    model = tmp_path / 'm.onnx'
    tiny_onnx(model)
    onnx_demo.main([str(model), str(data / 'toy_000.png'), '--out', str(tmp_path / 'ok.png')])
    assert cv2.imread(str(tmp_path / 'ok.png')).shape == (60, 80, 3)

    images = tmp_path / 'images'
    shutil.copytree(data, images)
    before = snapshot(images)
    with pytest.raises(SystemExit, match=f'--out {images}: writing {images / "toy_000.png"} would overwrite the '
                                         f'input {images / "toy_000.png"}'):
        onnx_demo.main([str(model), str(images), '--out', str(images)])
    assert snapshot(images) == before

    truncated = tmp_path / 'truncated.onnx'
    truncated.write_bytes(model.read_bytes()[:40])
    with pytest.raises(SystemExit, match=f'cannot load ONNX model {truncated} \\(40 bytes\\): truncated, corrupt'):
        onnx_demo.main([str(truncated), str(images), '--out', str(tmp_path / 'vis')])

    monkeypatch.setattr(cv2, 'imwrite', lambda *args, **kwargs: False)
    with pytest.raises(SystemExit, match=f'cannot write image {tmp_path / "vis" / "toy_000.png"}'):
        onnx_demo.main([str(model), str(images), '--out', str(tmp_path / 'vis')])


# ------------------------------------------------------------------------------------------ test.py (items 1, 10)
@DATASETS.register_module(force=True)
class NestedToyDataset(toy.ToyDataset):
    """The toy images in two folders with the same file names: ``a/x_0.png``, ``b/x_0.png``, ``a/x_1.png``, ..."""

    def img_path(self, idx):
        return os.path.join(self.data_root, 'ab'[idx % 2], f'x_{idx // 2}.png') if self.data_root else None

    def __init__(self, *args, data_root=None, **kwargs):
        for sub in 'ab':
            os.makedirs(os.path.join(data_root, sub), exist_ok=True)
        super().__init__(*args, data_root=data_root, **kwargs)

    def get_data_info(self, idx):
        return {'img_path': self.img_path(idx)}


def test_test_show_dir_keeps_colliding_names_apart_and_spares_the_images(load_tool, toy_model, tmp_path):
    root, cfg, ckpt, data = toy_model
    test_tool = load_tool('tools/test.py')
    nested = tmp_path / 'nested'
    loader = dict(batch_size=2, num_workers=0, shuffle=False,
                  dataset=dict(type='NestedToyDataset', num_images=4, data_root=str(nested),
                               pipeline=toy.toy_pipeline(), test_mode=True))
    nested_cfg = toy.write_toy_config(str(tmp_path / 'nested_cfg.py'), str(tmp_path / 'unused'),
                                      test_dataloader=loader)
    show = tmp_path / 'vis'
    test_tool.main([nested_cfg, ckpt, '--device', 'cpu', '--show-dir', str(show), '--show-score-thr', '0'])
    assert snapshot(show).keys() == {'a/x_0.png', 'a/x_1.png', 'b/x_0.png', 'b/x_1.png'}
    assert cv2.imread(str(show / 'a' / 'x_0.png')).shape == (60, 80, 3)

    before = snapshot(nested)
    with pytest.raises(SystemExit, match=f'--show-dir {nested}: writing {nested}/a/x_0.png would overwrite the input '
                                         f'{nested}/a/x_0.png'):
        test_tool.main([nested_cfg, ckpt, '--device', 'cpu', '--show-dir', str(nested)])
    assert snapshot(nested) == before
    # a dataset without get_data_info (the toy one): checked on the predicted items' paths
    before = snapshot(data)
    with pytest.raises(SystemExit, match=f'--show-dir {data}: writing {data}/toy_000.png would overwrite'):
        test_tool.main([cfg, ckpt, '--device', 'cpu', '--show-dir', str(data)])
    assert snapshot(data) == before
    (tmp_path / 'dets.pkl').symlink_to(ckpt)  # --out through a symlink to the checkpoint
    with pytest.raises(SystemExit, match=f'--out {tmp_path / "dets.pkl"}: writing {tmp_path / "dets.pkl"} would '
                                         f'overwrite the input {ckpt}'):
        test_tool.main([cfg, ckpt, '--device', 'cpu', '--out', str(tmp_path / 'dets.pkl')])
    assert torch.load(ckpt, weights_only=True)['meta']['dataset_meta']['classes'] == toy.CLASSES
