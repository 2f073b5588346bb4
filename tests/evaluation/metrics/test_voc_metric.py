"""VOCMetric follows the metric protocol and reports eval_map's numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detkit.evaluation import VOCMetric, eval_map
from detkit.registry import METRICS


def make_samples(rng, n=20, num_classes=3):
    samples = []
    for i in range(n):
        m = int(rng.integers(1, 5))
        xy = rng.integers(0, 60, (m, 2))
        gt = np.hstack([xy, xy + rng.integers(5, 40, (m, 2))]).astype(np.float32)
        labels = rng.integers(0, num_classes, m)
        difficult = rng.random(m) < 0.2
        boxes = np.vstack([gt + rng.normal(0, 2, gt.shape), rng.integers(0, 80, (2, 4)).cumsum(1)]).astype(np.float32)
        samples.append(dict(
            img_id=f'{i:06d}', ori_shape=(100, 120),
            pred=dict(boxes=torch.from_numpy(boxes), scores=torch.rand(len(boxes), generator=torch.Generator()
                                                                       .manual_seed(i)),
                      labels=torch.from_numpy(np.concatenate([labels, rng.integers(0, num_classes, 2)]))),
            gt=dict(bboxes=gt[~difficult], labels=labels[~difficult], bboxes_ignore=gt[difficult],
                    labels_ignore=labels[difficult])))
    return samples


def per_class_dets(samples, num_classes):
    """eval_map's input: per image, per class an (n, 5) array of boxes and scores."""
    dets = []
    for s in samples:
        b, sc, lab = s['pred']['boxes'].numpy(), s['pred']['scores'].numpy(), s['pred']['labels'].numpy()
        dets.append([np.hstack([b, sc[:, None]])[lab == c] for c in range(num_classes)])
    return dets


@pytest.mark.parametrize('mode', ['11points', 'area'])
def test_voc_metric_equals_eval_map(mode):
    samples = make_samples(np.random.default_rng(0))
    metric = METRICS.build(dict(type='VOCMetric', iou_thr=[0.5, 0.75], eval_mode=mode))
    metric.dataset_meta = dict(classes=('a', 'b', 'c'))
    metric.process(None, samples[:7])
    metric.process(None, samples[7:])
    out = metric.evaluate(len(samples))
    assert set(out) == {'voc/mAP', 'voc/AP50', 'voc/AP75'}

    dets = per_class_dets(samples, 3)
    ap50 = eval_map(dets, [s['gt'] for s in samples], iou_thr=0.5, mode=mode, logger='silent')[0]
    ap75 = eval_map(dets, [s['gt'] for s in samples], iou_thr=0.75, mode=mode, logger='silent')[0]
    assert out['voc/AP50'] == pytest.approx(ap50) and out['voc/AP75'] == pytest.approx(ap75)
    assert out['voc/mAP'] == pytest.approx((ap50 + ap75) / 2)
    assert 0 < ap75 < ap50 < 1
    assert metric.results == []  # evaluate() clears the stored results


def test_dataset_meta_classes_name_the_rows_and_set_the_number_of_classes(capsys):
    samples = make_samples(np.random.default_rng(1))
    classes = ('yak', 'emu', 'cat', 'absent')  # a fourth class without ground truth or detections
    metric = VOCMetric()
    metric.dataset_meta = dict(classes=classes)
    metric.process(None, samples)
    out = metric.evaluate(len(samples))
    rows = [[c.strip() for c in line.split('|')[1:-1]] for line in capsys.readouterr().out.splitlines()
            if line.startswith('| ') and not line.startswith(('| class', '| mAP'))]
    gts = np.bincount(np.concatenate([s['gt']['labels'] for s in samples]), minlength=4)
    assert [(r[0], int(r[1])) for r in rows] == list(zip(classes, gts.tolist()))  # label k is classes[k]
    # mode: VOCMetric's default
    ref = eval_map(per_class_dets(samples, 4), [s['gt'] for s in samples], mode='11points', logger='silent')[0]
    assert out['voc/mAP'] == pytest.approx(ref)


def test_voc_metric_perfect_predictions_and_errors(capsys):
    gt = dict(bboxes=np.array([[0, 0, 10, 10]], np.float32), labels=np.array([1]),
              bboxes_ignore=np.array([[20, 20, 30, 30]], np.float32), labels_ignore=np.array([0]))
    metric = VOCMetric()
    with pytest.raises(ValueError, match='dataset_meta'):
        metric.process(None, [])
    metric.dataset_meta = dict(classes=('a', 'b'))
    metric.process(None, [dict(img_id=1, ori_shape=(40, 40), gt=gt, pred=dict(
        boxes=np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), scores=np.array([.9, .95]), labels=np.array([1, 0])))])
    assert metric.evaluate(1) == {'voc/AP50': 1.0, 'voc/mAP': 1.0}
    assert '| mAP' in capsys.readouterr().out
    with pytest.raises(ValueError, match='eval_mode'):
        VOCMetric(eval_mode='coco')
    with pytest.raises(ValueError, match='labels must be in 0..1'):
        metric.process(None, [dict(img_id=1, ori_shape=(40, 40), gt=gt, pred=dict(
            boxes=np.zeros((1, 4)), scores=np.ones(1), labels=np.array([5])))])
