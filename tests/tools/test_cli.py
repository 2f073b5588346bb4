"""The command-line tools end to end on the toy parts: train -> resume -> test -> demo -> curves -> browse,
and distributed training through tools/dist_train.sh (torchrun, 2 CPU processes, gloo)."""
import contextlib
import glob
import io
import json
import os
import pickle
import runpy
import subprocess
import sys
import traceback
import warnings

import cv2
import numpy as np
import pytest
import toy
import torch
from mmengine.config import Config

from detkit.utils.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINE_TESTS = os.path.join(ROOT, 'tests', 'engine')


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([ROOT, ENGINE_TESTS] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    env['OMP_NUM_THREADS'] = '1'
    return env


def run_tool(*args, check=True):
    """``python TOOL ARGS`` from the repository root, run in this process (the script as ``__main__``, with
    ``sys.argv``): its exit status, stdout and stderr as a ``CompletedProcess``. A new interpreter would spend seconds
    importing torch per call; what a process would show is kept: ``SystemExit`` gives the status (a message goes to
    stderr with status 1), an exception its traceback with status 1, warnings go to stderr, and the torch thread
    count, ``sys.argv`` and the working directory are restored afterwards."""
    out, err = io.StringIO(), io.StringIO()
    threads, cwd, argv0 = torch.get_num_threads(), os.getcwd(), sys.argv
    code = 0
    try:
        os.chdir(ROOT)
        sys.argv = list(args)
        torch.set_num_threads(1)  # OMP_NUM_THREADS=1 of the tools' processes
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter('default')
            warnings.showwarning = lambda msg, cat, file, line, *_: err.write(
                warnings.formatwarning(msg, cat, file, line))
            try:
                runpy.run_path(os.path.join(ROOT, args[0]), run_name='__main__')
            except SystemExit as e:
                if isinstance(e.code, str):
                    err.write(e.code + '\n')
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
            except Exception:  # noqa: BLE001 (what the interpreter does with an uncaught exception)
                traceback.print_exc(file=err)
                code = 1
    finally:
        os.chdir(cwd)
        sys.argv = argv0
        torch.set_num_threads(threads)
    proc = subprocess.CompletedProcess([sys.executable, *args], code, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f'{args[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return proc


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('cli')
    cfg = toy.write_toy_config(str(root / 'toy_cfg.py'), str(root / 'unused'), data_root=str(root / 'data'))
    work = root / 'work'
    proc = run_tool('tools/train.py', cfg, '--work-dir', str(work), '--device', 'cpu', '--seed', '3',
                    '--auto-scale-lr', '--cfg-options', 'train_cfg.max_epochs=2', 'default_hooks.logger.interval=1',
                    'auto_scale_lr.base_batch_size=4')
    return root, cfg, work, proc


def test_train_writes_checkpoints_logs_and_a_reloadable_config(trained):
    root, cfg, work, proc = trained
    out = proc.stdout + proc.stderr
    assert 'auto_scale_lr: lr 0.02 -> 0.01' in out
    assert os.path.isfile(work / 'epoch_2.pth') and glob.glob(str(work / 'best_toy_mAP_epoch_*.pth'))
    dumped = load_config(work / 'toy_cfg.py')
    assert dumped.train_cfg.max_epochs == 2 and dumped.seed == 3 and dumped.auto_scale_lr.enable
    assert dumped.work_dir == str(work)
    lines = [json.loads(line) for line in open(glob.glob(str(work / '*.log.json'))[0])]
    assert len([r for r in lines if r['mode'] == 'train']) == 8 and len([r for r in lines if r['mode'] == 'val']) == 2


def test_resume_auto_continues_from_the_latest_epoch(trained):
    root, cfg, work, _ = trained
    proc = run_tool('tools/train.py', str(work / 'toy_cfg.py'), '--resume', '--cfg-options', 'train_cfg.max_epochs=3')
    assert f'resumed from {work / "epoch_2.pth"}: epoch 2, iteration 8' in proc.stdout + proc.stderr
    assert os.path.isfile(work / 'epoch_3.pth')
    bad = root / 'bad.pth'
    bad.write_bytes((work / 'epoch_2.pth').read_bytes()[:1000])
    proc = run_tool('tools/train.py', cfg, '--work-dir', str(root / 'w2'), '--resume', str(bad), check=False)
    assert proc.returncode != 0 and f'{bad}' in proc.stderr and 'truncated or corrupt' in proc.stderr


def test_a_second_train_run_on_a_busy_work_dir_is_refused(trained):
    root, cfg, _, _ = trained
    work = root / 'busy'
    holder = toy.hold_work_dir(str(work))
    try:
        proc = run_tool('tools/train.py', cfg, '--work-dir', str(work), check=False)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0
    assert f'work dir {work} is in use' in proc.stderr and f'pid {holder.pid}' in proc.stderr
    assert sorted(os.listdir(work)) == ['.detkit.lock']  # the running run's config dump and logs are untouched


def test_test_tool_evaluates_and_writes_json_pkl_and_images(trained):
    root, cfg, work, _ = trained
    ckpt = str(work / 'epoch_2.pth')
    proc = run_tool('tools/test.py', cfg, ckpt, '--out', str(root / 'dets.json'), '--show-dir', str(root / 'vis'),
                    '--work-dir', str(root / 'eval'), '--cfg-options', 'test_dataloader.batch_size=3')
    assert 'toy/mAP:' in proc.stdout and 'toy metric:' in proc.stdout  # the metric printed its own table
    dets = json.load(open(root / 'dets.json'))
    assert dets and {d['image_id'] for d in dets} == {0, 1, 2, 3}
    assert {d['category_id'] for d in dets} <= {10, 20} and all(len(d['bbox']) == 4 for d in dets)
    assert sorted(os.listdir(root / 'vis')) == [f'toy_{i:03d}.png' for i in range(4)]
    assert json.load(open(glob.glob(str(root / 'eval' / 'eval_*.json'))[0]))['metrics']['toy/num_images'] == 4

    run_tool('tools/test.py', cfg, ckpt, '--out', str(root / 'dets.pkl'))
    per_image = pickle.load(open(root / 'dets.pkl', 'rb'))
    assert len(per_image) == 4 and all(len(c) == 2 for c in per_image)
    assert all(a.dtype == np.float32 and a.shape[1] == 5 for c in per_image for a in c)
    assert sum(len(a) for a in per_image[0]) == len([d for d in dets if d['image_id'] == 0])


def test_test_and_demo_with_fast_inference(trained):
    """--fast exact gives the same detections as without; --fast bf16 runs; an unknown mode is named."""
    root, cfg, work, _ = trained
    ckpt = str(work / 'epoch_2.pth')
    for mode in ('none', 'exact'):
        run_tool('tools/test.py', cfg, ckpt, '--out', str(root / f'dets_{mode}.pkl'),
                 *(['--fast', mode] if mode != 'none' else []))
    eager, exact = (pickle.load(open(root / f'dets_{mode}.pkl', 'rb')) for mode in ('none', 'exact'))
    for image_a, image_b in zip(eager, exact):
        for a, b in zip(image_a, image_b):
            np.testing.assert_allclose(b, a, atol=1e-3)
    run_tool('tools/demo.py', cfg, ckpt, str(root / 'data' / 'toy_000.png'), '--out', str(root / 'bf16.jpg'),
             '--fast', 'bf16')
    assert cv2.imread(str(root / 'bf16.jpg')).shape == (60, 80, 3)
    proc = run_tool('tools/demo.py', cfg, ckpt, str(root / 'data' / 'toy_000.png'), '--fast', 'fp16', check=False)
    assert proc.returncode != 0 and "--fast: invalid choice: 'fp16'" in proc.stderr


def test_test_tool_refuses_a_misspelled_key_before_loading_anything(trained):
    root, cfg, work, _ = trained
    proc = run_tool('tools/test.py', cfg, str(work / 'epoch_2.pth'), '--cfg-options',
                    'env_cfg.num_thread=1', check=False)
    assert proc.returncode != 0
    assert "unknown key 'num_thread' in env_cfg; did you mean 'num_threads'?" in proc.stderr
    assert 'toy metric' not in proc.stdout


def test_eval_names_map_to_the_fixed_metric_types(load_tool):
    test_tool = load_tool('tools/test.py')
    cfg = Config(dict(test_evaluator=dict(type='VOCMetric', iou_thr=0.5, eval_mode='area')))
    assert test_tool.eval_metric_cfgs(['voc', 'coco'], cfg) == [
        dict(type='VOCMetric', iou_thr=0.5, eval_mode='area'), dict(type='CocoMetric')]


def test_demo_on_an_image_a_folder_and_a_video(trained):
    root, cfg, work, _ = trained
    ckpt = str(work / 'epoch_2.pth')
    video = str(root / 'clip.mp4')
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'mp4v'), 5, (80, 60))
    for i in range(3):
        writer.write(toy.make_item(i)[0])
    writer.release()
    run_tool('tools/demo.py', cfg, ckpt, str(root / 'data' / 'toy_000.png'), '--out', str(root / 'one.jpg'),
             '--score-thr', '0.1')
    assert cv2.imread(str(root / 'one.jpg')).shape == (60, 80, 3)
    run_tool('tools/demo.py', cfg, ckpt, str(root / 'data'), '--out', str(root / 'demo_dir'))
    assert len(os.listdir(root / 'demo_dir')) == 8
    run_tool('tools/demo.py', cfg, ckpt, video, '--out', str(root / 'clip_det.mp4'), '--score-thr', '0.1')
    cap = cv2.VideoCapture(str(root / 'clip_det.mp4'))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 3
    proc = run_tool('tools/demo.py', cfg, ckpt, str(root / 'missing.png'), check=False)
    assert proc.returncode != 0 and 'missing.png' in proc.stderr


def test_demo_fails_when_no_input_could_be_processed(trained):
    root, cfg, work, _ = trained
    bad = root / 'unreadable'
    bad.mkdir()
    (bad / 'a.jpg').write_bytes(b'not an image')
    (bad / 'b.png').write_bytes(b'')
    proc = run_tool('tools/demo.py', cfg, str(work / 'epoch_2.pth'), str(bad), '--out', str(root / 'none'),
                    check=False)
    assert proc.returncode != 0
    assert 'no input could be processed' in proc.stderr and 'a.jpg' in proc.stderr and 'b.png' in proc.stderr
    assert not os.path.exists(root / 'none')


def test_plot_curves_and_browse_dataset(trained):
    root, cfg, work, _ = trained
    logs = sorted(glob.glob(str(work / '*.log.json')))
    run_tool('tools/analysis/plot_curves.py', *logs, '--out', str(root / 'curves.png'))
    img = cv2.imread(str(root / 'curves.png'))
    assert img.shape == (460, 1280, 3) and (img < 250).any()
    run_tool('tools/analysis/browse_dataset.py', cfg, '--out', str(root / 'browse'), '--num', '3')
    shots = sorted(os.listdir(root / 'browse'))
    assert len(shots) == 3
    # un-normalised: the grey background (90) comes back, not a black or saturated image
    shot = cv2.imread(str(root / 'browse' / shots[0]))
    assert abs(float(np.median(shot)) - 90) < 6


@pytest.mark.slow  # three processes import torch: torchrun and its two ranks
def test_dist_train_sh_two_cpu_processes(trained):
    root, cfg, _, _ = trained
    work = root / 'dist'
    env = _env()
    env['PYTHON'] = sys.executable
    env['PORT'] = str(29500 + os.getpid() % 1000)
    proc = subprocess.run(['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir', str(work), '--device', 'cpu',
                           '--cfg-options', 'train_cfg.max_epochs=1'], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '2 process(es) x batch 2' in proc.stdout + proc.stderr
    assert os.path.isfile(work / 'epoch_1.pth')
    usage = subprocess.run(['bash', 'tools/dist_train.sh'], cwd=ROOT, capture_output=True, text=True)
    assert usage.returncode == 2 and 'usage' in usage.stderr
