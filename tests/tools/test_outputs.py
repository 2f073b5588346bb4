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
import onnx
import pytest
import toy
import torch
import torchvision
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
    assert str(err.value) == (f'--out {videos}/: writing {videos}/long.mp4 would overwrite the input '
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
    image = helper.make_tensor_value_info('image', TensorProto.UINT8, [None, None, 3])
    graph = helper.make_graph(nodes, 'tiny', [image], [helper.make_tensor_value_info(n, d, s) for n, d, s, _ in outputs])
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


# ------------------------------------------------------------------------------ export_onnx.py (items 17, 19)
def test_export_refuses_bad_destinations_before_loading(load_tool, toy_model, tmp_path):
    root, cfg, ckpt, data = toy_model
    export = load_tool('tools/deployment/export_onnx.py')
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    before = Path(ckpt).read_bytes()
    for out, message in ((tmp_path, f'--out {tmp_path} is a directory; give a file name'),
                         (blocker / 'm.onnx', f'--out {blocker / "m.onnx"}: cannot create .*: {blocker} is a file'),
                         (ckpt, f'--out {ckpt}: writing {ckpt} would overwrite the input {ckpt}')):
        with pytest.raises(SystemExit, match=message):
            export.main([cfg, ckpt, '--out', str(out)])
    assert Path(ckpt).read_bytes() == before


def test_export_of_soft_nms_without_max_per_class_says_what_to_pass(load_tool, tmp_path, capsys):
    """The M2Det quickstart config: soft-NMS, max_per_class=0, max_per_img=100: one message before exporting."""
    from detkit.utils import load_config

    config = str(ROOT / 'configs' / 'quickstart' / 'm2det_shapes.py')
    model = MODELS.build(dict(load_config(config).model, check_input_size=False))  # its weights, built quickly
    assert model.test_cfg.nms.type == 'soft_nms' and model.test_cfg.max_per_class == 0
    ckpt = tmp_path / 'm2det.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    out = tmp_path / 'm2det.onnx'
    with pytest.raises(SystemExit) as err:
        load_tool('tools/deployment/export_onnx.py').main([config, str(ckpt), '--out', str(out)])
    assert str(err.value) == (
        f'{config}: soft-NMS has no ONNX operator and is exported as test_cfg.max_per_class rounds per class, but '
        'max_per_class=0 (no limit): pass --cfg-options model.test_cfg.max_per_class=100 (= max_per_img: the same '
        'detections, as no class can keep more than the whole image), or --hard-nms to export hard NMS instead')
    assert not out.exists() and 'rounds per class' not in capsys.readouterr().out


# ----------------------------------------------------------------------------- model converters (item 18)
def resnet_file(path: Path, **backbone) -> dict[str, torch.Tensor]:
    """A torchvision-layout ResNet state dict (detkit's ResNet keeps torchvision's names), saved to ``path``."""
    torch.manual_seed(0)
    state = MODELS.build(dict(type='ResNet', **backbone)).state_dict()
    torch.save(state, path)
    return state


def test_torchvision_resnet_with_config_is_checked_against_the_backbone(load_tool, tmp_path):
    """``resnet SRC DST --config`` compares with the config's backbone (the quickstart's half-width ResNet-18), not
    the whole detector; the output folder is created."""
    convert = load_tool('tools/model_converters/torchvision_to_detkit.py')
    config = str(ROOT / 'configs' / 'quickstart' / 'ssd_shapes.py')
    src = tmp_path / 'resnet18_half.pth'
    state = resnet_file(src, depth=18, base_channels=32)
    dst = tmp_path / 'new' / 'folder' / 'out.pth'
    convert.main(['resnet', str(src), str(dst), '--config', config])
    out = torch.load(dst, weights_only=True)['state_dict']
    assert out.keys() == state.keys() and all(torch.equal(out[k], state[k]) for k in state)
    resnet_file(tmp_path / 'r18.pth', depth=18)  # full width against the half-width backbone
    with pytest.raises(SystemExit, match=r'r18.pth \(resnet\) does not fit ResNet: 0 model keys missing \[\], 0 keys '
                                         r'the model does not have \[\], \d+ shape mismatches'):
        convert.main(['resnet', str(tmp_path / 'r18.pth'), str(tmp_path / 'x.pth'), '--config', config])


def test_torchvision_vgg16_with_config_leaves_the_layers_vgg16_lacks(load_tool, tmp_path):
    """SSDVGG's fc6, fc7 and L2Norm are in no torchvision VGG16 file: they may be missing, nothing else may."""
    convert = load_tool('tools/model_converters/torchvision_to_detkit.py')
    backbone = dict(type='SSDVGG', widen_factor=0.0625)
    config = tmp_path / 'narrow_ssd.py'
    config.write_text(f'model = dict(type="SingleStageDetector", backbone={backbone!r})\n')
    vgg = {k: v for k, v in MODELS.build(backbone).state_dict().items() if k.startswith('features.')
           and int(k.split('.')[1]) <= 28}  # conv1_1 .. conv5_3 under torchvision's names
    torch.save(vgg, tmp_path / 'vgg16.pth')
    convert.main(['vgg16', str(tmp_path / 'vgg16.pth'), str(tmp_path / 'out.pth'), '--config', str(config)])
    assert torch.load(tmp_path / 'out.pth', weights_only=True)['state_dict'].keys() == vgg.keys()
    del vgg['features.28.weight']
    torch.save(vgg, tmp_path / 'vgg16_cut.pth')
    with pytest.raises(SystemExit, match=r"vgg16_cut.pth is not a torchvision vgg16 state dict: the closest, vgg16, "
                                         r"has 1 keys the file lacks \['features.28.weight'\]"):
        convert.main(['vgg16', str(tmp_path / 'vgg16_cut.pth'), str(tmp_path / 'out2.pth')])


def test_torchvision_converter_refuses_foreign_files_and_its_source_and_writes_atomically(load_tool, tmp_path,
                                                                                         monkeypatch):
    convert = load_tool('tools/model_converters/torchvision_to_detkit.py')
    one = tmp_path / 'one.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7)}, one)
    with torch.device('meta'):  # resnet18's weights less its classifier and batch norm counters
        lacking = len([k for k in torchvision.models.resnet18().state_dict()
                       if not k.startswith('fc.') and not k.endswith('num_batches_tracked')]) - 1
    with pytest.raises(SystemExit, match=rf"one.pth is not a torchvision resnet state dict: the closest, resnet18, has "
                                         rf"{lacking} keys the file lacks \['bn1.bias', 'bn1.running_mean'"):
        convert.main(['resnet', str(one), str(tmp_path / 'out.pth')])
    assert not (tmp_path / 'out.pth').exists()

    src = tmp_path / 'r18.pth'
    resnet_file(src, depth=18, base_channels=8)
    os.link(src, tmp_path / 'same.pth')
    before = src.read_bytes()
    for dst in (src, tmp_path / 'same.pth'):
        with pytest.raises(SystemExit, match=f'dst {dst}: writing {dst} would overwrite the input {src}'):
            convert.main(['resnet', str(src), str(dst)])
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    with pytest.raises(SystemExit, match=f'dst {blocker / "out.pth"}: cannot create .*: {blocker} is a file'):
        convert.main(['resnet', str(src), str(blocker / 'out.pth')])
    assert src.read_bytes() == before

    dst = tmp_path / 'out.pth'
    convert.main(['resnet', str(src), str(dst)])
    written = dst.read_bytes()

    def disk_full(obj, f, *args, **kwargs):  # writes part of the file, then fails
        with (open(f, 'wb') if isinstance(f, (str, os.PathLike)) else f) as handle:
            handle.write(b'partial')
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(torch, 'save', disk_full)
    with pytest.raises(OSError, match='No space left'):
        convert.main(['resnet', str(src), str(dst)])
    assert dst.read_bytes() == written  # the earlier output is intact
    assert sorted(os.listdir(tmp_path)) == ['a_file', 'one.pth', 'out.pth', 'r18.pth', 'same.pth']


@pytest.mark.parametrize('script, state', [
    ('m2det_to_detkit.py', {'base.0.weight': torch.ones(4, 3, 3, 3)}),
    ('mmdet_to_detkit.py', {'state_dict': {'backbone.features.0.weight': torch.ones(4, 3, 3, 3)}}),
])
def test_other_converters_refuse_their_source_as_destination(load_tool, tmp_path, script, state):
    src = tmp_path / 'src.pth'
    torch.save(state, src)
    before = src.read_bytes()
    with pytest.raises(SystemExit, match=f'dst {src}: writing {src} would overwrite the input {src}'):
        load_tool(f'tools/model_converters/{script}').main([str(src), str(src)])
    assert src.read_bytes() == before


# ------------------------------------------------------------------------------------- dist_train.sh (item 21)
def test_dist_train_sh_uses_the_project_venv(tmp_path):
    """Without $PYTHON the script runs the checkout's .venv/bin/python (here a stand-in that prints its arguments),
    not whatever python PATH holds; its usage line says so."""
    (tmp_path / 'tools').mkdir()
    shutil.copy(ROOT / 'tools' / 'dist_train.sh', tmp_path / 'tools' / 'dist_train.sh')
    venv_python = tmp_path / '.venv' / 'bin' / 'python'
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text('#!/bin/sh\necho "venv python: $*"\n')
    venv_python.chmod(0o755)
    env = {'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path)}
    proc = subprocess.run(['bash', str(tmp_path / 'tools' / 'dist_train.sh'), 'cfg.py', '2'], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('venv python: -m torch.distributed.run ')
    assert f'{tmp_path}/tools/train.py cfg.py --launcher pytorch' in proc.stdout
    usage = subprocess.run(['bash', str(tmp_path / 'tools' / 'dist_train.sh')], env=env, capture_output=True,
                           text=True, timeout=60)
    assert usage.returncode == 2
    assert f'runs {venv_python} ($PYTHON when set, else {venv_python} when it exists, else python from PATH)' \
        in usage.stderr
