"""Drawing detections (detkit/utils/visualization.py) and the curve plot's tick maths."""
import importlib.util
import json
import os

import cv2
import numpy as np
import torch

from detkit.utils.visualization import class_color, draw_detections

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _plot_curves():
    spec = importlib.util.spec_from_file_location('plot_curves', os.path.join(ROOT, 'tools/analysis/plot_curves.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_boxes_are_drawn_in_the_class_colour_and_the_input_is_untouched():
    img = np.zeros((100, 120, 3), np.uint8)
    out = draw_detections(img, torch.tensor([[20.0, 40.0, 80.0, 90.0], [5, 5, 15, 15]]), torch.tensor([3, 1]),
                          torch.tensor([0.9, 0.1]), class_names=['a', 'b', 'c', 'dog'], score_thr=0.3, thickness=1)
    assert img.max() == 0
    assert tuple(out[65, 20]) == class_color(3)       # left edge of the kept box
    assert tuple(out[10, 5]) == (0, 0, 0)             # the low-scoring box is not drawn
    assert (out[:40, 20:80] != 0).any()               # its caption sits above the box


def test_ground_truth_grey_input_and_unknown_names():
    out = draw_detections(np.full((50, 50), 128, np.uint8), np.array([[0, 0, 30, 30]]), np.array([7]), None, None)
    assert out.shape == (50, 50, 3) and tuple(out[15, 0]) == class_color(7)
    assert len({class_color(i) for i in range(20)}) == 20


def test_nice_ticks_and_log_loading(tmp_path):
    pc = _plot_curves()
    assert pc.nice_ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert pc.nice_ticks(1, 2, integer=True) == [1, 2]
    # the axis covers the data: 0.88 is above 0.8, the last multiple of the 0.2 step below it
    assert pc.nice_ticks(0.3368, 0.8807) == [0.2, 0.4, 0.6, 0.8, 1.0]
    rng = np.random.default_rng(0)
    for lo, span in zip(rng.uniform(-50, 50, 200), 10.0 ** rng.uniform(-3, 3, 200)):
        ticks = pc.nice_ticks(lo, lo + span)
        eps = 1e-9 * span
        assert ticks[0] <= lo + eps and ticks[-1] >= lo + span - eps and 2 <= len(ticks) <= 9
    flat = pc.nice_ticks(3, 3)  # a constant series still gets an axis around it
    assert len(flat) >= 2 and flat[0] <= 3 <= flat[-1]
    log = tmp_path / 'run.log.json'
    log.write_text('\n'.join(json.dumps(r) for r in [
        {'mode': 'train', 'epoch': 1, 'iter': 2, 'step': 2, 'loss': 2.0, 'loss_cls': 1.5, 'lr': 0.1},
        {'mode': 'val', 'epoch': 1, 'step': 2, 'voc/mAP': 0.3, 'voc/AP50': 0.3},
        {'mode': 'train', 'epoch': 2, 'iter': 2, 'step': 4, 'loss': 'nan', 'loss_cls': 1.0, 'lr': 0.1}]) + '\n')
    train, val = pc.load_log([str(log)])
    assert len(train) == 2 and len(val) == 1
    series = pc.collect_series(train, ['loss', 'loss_cls'], 'step')
    assert series['loss'] == ([2], [2.0]) and series['loss_cls'] == ([2, 4], [1.5, 1.0])  # 'nan' skipped
    out = pc.plot_curves([str(log)], str(tmp_path / 'c.png'), keys=['loss_cls', 'voc/mAP'])
    assert cv2.imread(out).shape == (460, 1280, 3)
