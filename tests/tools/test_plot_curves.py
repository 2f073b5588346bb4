"""tools/analysis/plot_curves.py: the axis tick maths, log loading and the plot."""
import json

import cv2
import numpy as np


def test_nice_ticks_and_log_loading(tmp_path, load_tool):
    pc = load_tool('tools/analysis/plot_curves.py')
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
