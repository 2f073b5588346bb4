"""CocoMetric: the same numbers as pycocotools' COCOeval run directly on the same files; original category ids
in the results JSON; in-memory ground truth for datasets without a COCO file; the faster-coco-eval backend gives
pycocotools' numbers and per-class table."""
from __future__ import annotations

import contextlib
import io
import json
import sys

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.datasets import build_dataset, shapes_dataset_cfg, write_shapes
from detkit.evaluation import CocoMetric, VOCMetric
from detkit.registry import METRICS

CATS = [dict(id=3, name='cat'), dict(id=17, name='dog'), dict(id=90, name='emu')]
CLASSES = ('cat', 'dog', 'emu')  # labels 0, 1, 2 <-> ids 3, 17, 90


def make_coco(rng, path, n=15):
    images, anns, preds = [], [], []
    for i in range(n):
        img_id = 100 + 7 * i  # non-contiguous image ids too
        h, w = int(rng.integers(200, 400)), int(rng.integers(200, 400))
        images.append(dict(id=img_id, file_name=f'{img_id}.jpg', width=w, height=h))
        m = int(rng.integers(0, 6))
        xy = rng.uniform(0, 150, (m, 2))
        wh = rng.uniform(4, 150, (m, 2))  # small, medium and large boxes
        labels = rng.integers(0, 3, m)
        crowd = rng.random(m) < 0.1
        for b, lab, c in zip(np.hstack([xy, wh]).tolist(), labels, crowd):
            anns.append(dict(id=len(anns) + 1, image_id=img_id, category_id=CATS[lab]['id'], bbox=b,
                             area=b[2] * b[3], iscrowd=int(c)))
        hits = np.hstack([xy, xy + wh]) + rng.normal(0, 4, (m, 4))
        fxy = rng.uniform(0, 200, (3, 2))
        boxes = np.vstack([hits, np.hstack([fxy, fxy + rng.uniform(5, 80, (3, 2))])]).astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        preds.append(dict(img_id=img_id, ori_shape=(h, w), pred=dict(
            boxes=boxes, scores=rng.random(len(boxes)).astype(np.float32),
            labels=np.concatenate([labels, rng.integers(0, 3, 3)]))))
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=CATS), f)
    return preds


def direct_cocoeval(ann_file, res_file, max_dets=None, cat_ids=None):
    """pycocotools' COCOeval on the files (the independent reference) and what its summarize() printed."""
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        gt = COCO(ann_file)
        dt = gt.loadRes(res_file)
        e = COCOeval(gt, dt, 'bbox')
        if max_dets:
            e.params.maxDets = list(max_dets)
        if cat_ids:
            e.params.catIds = list(cat_ids)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e.stats, [line for line in printed.getvalue().splitlines() if line.startswith(' Average')], e


@pytest.mark.parametrize('backend', ['pycocotools', 'faster_coco_eval'])
def test_equals_cocoeval_on_the_same_files(tmp_path, capsys, backend):
    ann_file = str(tmp_path / 'gt.json')
    samples = make_coco(np.random.default_rng(0), ann_file)
    metric = METRICS.build(dict(type='CocoMetric', ann_file=ann_file, outfile_prefix=str(tmp_path / 'out' / 'r'),
                                backend=backend))
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process(None, samples[:4])
    metric.process(None, samples[4:])
    out = metric.evaluate(len(samples))
    printed = capsys.readouterr().out
    assert printed.count('Average Precision') == 6 and printed.count('Average Recall') == 6
    assert f'CocoMetric: {backend}' in printed
    assert '| class' in printed and '| emu' in printed

    res_file = str(tmp_path / 'out' / 'r.bbox.json')
    stats, lines, _ = direct_cocoeval(ann_file, res_file)
    assert [line for line in printed.splitlines() if line.startswith(' Average')] == lines  # the same summary
    names = ['bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l', 'bbox_AR_1',
             'bbox_AR_10', 'bbox_AR_100', 'bbox_AR_s', 'bbox_AR_m', 'bbox_AR_l']
    assert list(out) == [f'coco/{n}' for n in names]
    # faster-coco-eval's C++ precision array may differ from numpy's in the last bit of a double
    np.testing.assert_allclose([out[f'coco/{n}'] for n in names], stats, rtol=0, atol=1e-15)
    assert 0.05 < out['coco/bbox_mAP'] < 0.95

    # the results JSON holds original category ids and xywh boxes
    results = json.load(open(res_file))
    assert {r['category_id'] for r in results} <= {3, 17, 90}
    first = samples[0]['pred']
    r0 = [r for r in results if r['image_id'] == samples[0]['img_id']][0]
    x1, y1, x2, y2 = first['boxes'][0].tolist()
    np.testing.assert_allclose(r0['bbox'], [x1, y1, x2 - x1, y2 - y1], rtol=1e-6)
    assert r0['category_id'] == CATS[int(first['labels'][0])]['id']


def test_in_memory_ground_truth_gives_the_same_numbers(tmp_path):
    """Without ann_file the metric builds the COCO object from sample['gt']; crowd boxes become ignore boxes."""
    ann_file = str(tmp_path / 'gt.json')
    samples = make_coco(np.random.default_rng(1), ann_file)
    coco = COCO(ann_file)
    cat2label = {c['id']: i for i, c in enumerate(CATS)}
    for s in samples:
        anns = coco.imgToAnns[s['img_id']]
        boxes = np.array([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2], a['bbox'][1] + a['bbox'][3]]
                          for a in anns], np.float32).reshape(-1, 4)
        labels = np.array([cat2label[a['category_id']] for a in anns], np.int64)
        crowd = np.array([a['iscrowd'] for a in anns], bool)
        s['gt'] = dict(bboxes=boxes[~crowd], labels=labels[~crowd], bboxes_ignore=boxes[crowd],
                       labels_ignore=labels[crowd])
    with_file = CocoMetric(ann_file=ann_file, classwise=False)
    in_memory = CocoMetric(classwise=False)
    for m in (with_file, in_memory):
        m.dataset_meta = dict(classes=CLASSES, cat_ids=(3, 17, 90))
        m.process(None, samples)
    a, b = with_file.evaluate(len(samples)), in_memory.evaluate(len(samples))
    # areas in the file are w*h, as the in-memory object computes them: the stats agree
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-6), k


def test_coco_metric_on_voc_layout_shapes(tmp_path):
    """CocoMetric and VOCMetric both run on a VOC-layout dataset; perfect predictions score 1."""
    write_shapes(str(tmp_path), num=4, fmt='voc', seed=3, size=96)
    ds = build_dataset(dict(shapes_dataset_cfg(str(tmp_path), 'voc'), test_mode=True))
    samples = []
    for i in range(len(ds)):
        gt = ds.get_ann_info(i)
        samples.append(dict(img_id=ds.get_data_info(i)['img_id'], ori_shape=(96, 96), gt=gt, pred=dict(
            boxes=gt['bboxes'], scores=np.linspace(1, 0.5, len(gt['bboxes'])), labels=gt['labels'])))
    for metric, key in ((CocoMetric(), 'coco/bbox_mAP'), (VOCMetric(), 'voc/mAP')):
        metric.dataset_meta = ds.metainfo
        metric.process(None, samples)
        assert metric.evaluate(len(samples))[key] == pytest.approx(1.0)


def test_subset_classes_map_by_name_and_errors(tmp_path):
    ann_file = str(tmp_path / 'gt.json')
    samples = make_coco(np.random.default_rng(2), ann_file, n=4)
    for s in samples:  # predictions only for labels of the subset ('emu', 'cat')
        keep = s['pred']['labels'] < 2
        s['pred'] = {k: v[keep] for k, v in s['pred'].items()}
    metric = CocoMetric(ann_file=ann_file, outfile_prefix=str(tmp_path / 'sub'))
    metric.dataset_meta = dict(classes=('emu', 'cat'))
    metric.process(None, samples)
    out = metric.evaluate(len(samples))
    # label k is the k-th name of the subset (emu: id 90, cat: id 3), not the k-th category of the file
    results = json.load(open(tmp_path / 'sub.bbox.json'))
    labels = np.concatenate([s['pred']['labels'] for s in samples])
    assert [sum(r['category_id'] == i for r in results) for i in (90, 3)] == np.bincount(labels).tolist()
    # scored over the subset's categories only: the dogs in the file are neither misses nor false positives
    stats, _, _ = direct_cocoeval(ann_file, str(tmp_path / 'sub.bbox.json'), cat_ids=(90, 3))
    np.testing.assert_allclose(list(out.values()), stats, rtol=0, atol=1e-15)
    bad = CocoMetric(ann_file=ann_file)
    bad.dataset_meta = dict(classes=('emu', 'yak'))
    bad.process(None, samples)
    with pytest.raises(ValueError, match="'yak'"):
        bad.evaluate(len(samples))
    with pytest.raises(ValueError, match='bbox'):
        CocoMetric(metric='segm')
    with pytest.raises(FileNotFoundError, match='nope.json'):
        CocoMetric(ann_file=str(tmp_path / 'nope.json'))


def test_no_detections_and_format_only(tmp_path):
    ann_file = str(tmp_path / 'gt.json')
    samples = make_coco(np.random.default_rng(3), ann_file, n=3)
    for s in samples:
        s['pred'] = dict(boxes=np.zeros((0, 4)), scores=np.zeros(0), labels=np.zeros(0, np.int64))
    m = CocoMetric(ann_file=ann_file)
    m.dataset_meta = dict(classes=CLASSES)
    m.process(None, samples)
    assert set(m.evaluate(3).values()) == {0.0}
    f = CocoMetric(ann_file=ann_file, format_only=True, outfile_prefix=str(tmp_path / 'fo'))
    f.dataset_meta = dict(classes=CLASSES)
    f.process(None, samples)
    assert f.evaluate(3) == {} and (tmp_path / 'fo.bbox.json').exists()


# ---------------------------------------------------------------------------------- pycocotools vs faster-coco-eval
HARD_CATS = CATS + [dict(id=55, name='yak')]  # 'yak' has no ground truth anywhere (COCOeval gives it -1)
HARD_CLASSES = ('cat', 'dog', 'emu', 'yak')


def make_hard_coco(rng: np.random.Generator, path: str, n: int = 40) -> list[dict]:
    """COCO data with every case COCOeval treats specially, written to ``path``; returns the metric samples.

    Image ids and category ids are non-contiguous; image ``i % 6 == 0`` has detections but no ground truth,
    ``1`` ground truth but no detections, ``2`` neither; about a fifth of the boxes are crowd regions, each with
    detections inside it (matched to a crowd box, a detection is ignored); other images get up to 45 detections
    (more than ``maxDets=20`` keeps) and boxes of every COCO size (small, medium, large).
    """
    images, anns, samples = [], [], []
    for i in range(n):
        img_id = 1000 + 13 * i
        h, w = int(rng.integers(300, 640)), int(rng.integers(300, 640))
        images.append(dict(id=img_id, file_name=f'{img_id}.jpg', width=w, height=h))
        m = 0 if i % 6 in (0, 2) else int(rng.integers(1, 9))
        xy = rng.uniform(0, 200, (m, 2))
        wh = np.exp(rng.uniform(np.log(6), np.log(250), (m, 2)))
        gt = np.hstack([xy, xy + wh])
        labels = rng.integers(0, 3, m)
        crowd = rng.random(m) < 0.2
        for (x1, y1, x2, y2), lab, c in zip(gt.tolist(), labels, crowd):
            anns.append(dict(id=len(anns) + 1, image_id=img_id, category_id=CATS[lab]['id'],
                             bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1), iscrowd=int(c)))
        if i % 6 in (1, 2):
            boxes, det_labels = np.zeros((0, 4)), np.zeros(0, np.int64)
        else:
            src = rng.integers(0, max(m, 1), 3 * m)
            hits = gt[src] + rng.normal(0, 3, (3 * m, 4)) if m else np.zeros((0, 4))
            inner = []
            for (x1, y1, x2, y2), c in zip(gt.tolist(), crowd):
                if c:  # small detections inside the crowd region
                    inner.append([x1 + 1, y1 + 1, x1 + (x2 - x1) / 3, y1 + (y2 - y1) / 3])
            n_fp = int(rng.integers(2, 20))
            fxy = rng.uniform(0, 300, (n_fp, 2))
            fps = np.hstack([fxy, fxy + rng.uniform(4, 200, (n_fp, 2))])
            boxes = np.vstack([hits, np.reshape(inner, (-1, 4)), fps])
            det_labels = np.concatenate([labels[src] if m else np.zeros(0, np.int64),
                                         labels[crowd], rng.integers(0, 4, n_fp)]).astype(np.int64)
        boxes = boxes.astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        gt_boxes = gt.astype(np.float32).reshape(-1, 4)
        samples.append(dict(img_id=img_id, ori_shape=(h, w), pred=dict(
            boxes=boxes, scores=rng.random(len(boxes)).astype(np.float32), labels=det_labels),
            gt=dict(bboxes=gt_boxes[~crowd], labels=labels[~crowd], bboxes_ignore=gt_boxes[crowd],
                    labels_ignore=labels[crowd])))
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=HARD_CATS), f)
    return samples


def _run(backend: str, samples: list[dict], classes: tuple[str, ...], **kwargs) -> tuple[dict, str]:
    """The metric's results and the per-class table it printed."""
    metric = CocoMetric(backend=backend, **kwargs)
    metric.dataset_meta = dict(classes=classes, cat_ids=tuple(c['id'] for c in HARD_CATS))
    metric.process(None, samples)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        out = metric.evaluate(len(samples))
    text = printed.getvalue()
    return out, text[text.index('+--'):]


@pytest.mark.parametrize('case', ['default', 'max_dets', 'class_subset', 'iou_thrs', 'in_memory_gt'])
def test_both_backends_give_the_same_numbers_and_per_class_table(tmp_path, case):
    ann_file = str(tmp_path / 'gt.json')
    samples = make_hard_coco(np.random.default_rng(7), ann_file)
    kwargs = dict(ann_file=ann_file)
    classes = HARD_CLASSES
    if case == 'max_dets':  # up to 45 detections per image: AP keeps the best 20, AR_1/AR_10 fewer
        kwargs.update(max_dets=(1, 5, 20), outfile_prefix=str(tmp_path / 'r'))
    elif case == 'class_subset':  # labels index the subset: drop the others, keep label numbers of the subset
        classes = ('emu', 'cat')
        for s in samples:
            keep = np.isin(s['pred']['labels'], [0, 2])
            s['pred'] = {k: v[keep] for k, v in s['pred'].items()}
            s['pred']['labels'] = np.where(s['pred']['labels'] == 2, 0, 1)
    elif case == 'iou_thrs':
        kwargs['iou_thrs'] = [0.5, 0.6, 0.75, 0.8]
    elif case == 'in_memory_gt':
        kwargs['ann_file'] = None
    reference, ref_table = _run('pycocotools', samples, classes, **kwargs)
    fast, fast_table = _run('faster_coco_eval', samples, classes, **kwargs)
    assert list(fast) == list(reference)
    # the C++ precision array can differ from numpy's in the last bit of a double, nothing more
    np.testing.assert_allclose(list(fast.values()), list(reference.values()), rtol=0, atol=1e-15)
    assert fast_table == ref_table
    assert len(set(reference.values())) > 6 and 0.05 < reference['coco/bbox_mAP'] < 0.9  # not a degenerate case
    if case == 'default':
        assert ref_table.count('| yak ') == 1 and '| yak   | nan' in ref_table  # no ground truth: no AP
    if case == 'max_dets':
        # pycocotools' own numbers at maxDets=20; its summarize() takes the first AP at maxDets=100 and says -1
        stats, _, e = direct_cocoeval(ann_file, str(tmp_path / 'r.bbox.json'), max_dets=(1, 5, 20))
        assert stats[0] == -1
        precision = e.eval['precision'][:, :, :, 0, 2]  # all IoUs, recalls, classes; area all; maxDets 20
        expected = [np.mean(precision[precision > -1])] + list(stats[1:])
        np.testing.assert_allclose(list(reference.values()), expected, rtol=0, atol=1e-15)


def test_the_data_hits_every_special_case(tmp_path):
    """make_hard_coco holds what its docstring promises (else the test above proves less than it says)."""
    samples = make_hard_coco(np.random.default_rng(7), str(tmp_path / 'gt.json'))
    n_gt = [len(s['gt']['bboxes']) + len(s['gt']['bboxes_ignore']) for s in samples]
    n_dt = [len(s['pred']['boxes']) for s in samples]
    assert any(g == 0 and d > 0 for g, d in zip(n_gt, n_dt)) and any(g > 0 and d == 0 for g, d in zip(n_gt, n_dt))
    assert any(g == 0 and d == 0 for g, d in zip(n_gt, n_dt)) and max(n_dt) > 20
    assert sum(len(s['gt']['bboxes_ignore']) for s in samples) >= 5
    areas = np.concatenate([np.prod(s['gt']['bboxes'][:, 2:] - s['gt']['bboxes'][:, :2], 1) for s in samples])
    assert (areas < 32 ** 2).any() and ((areas > 32 ** 2) & (areas < 96 ** 2)).any() and (areas > 96 ** 2).any()


def test_auto_backend_and_a_missing_faster_coco_eval(monkeypatch):
    assert CocoMetric().backend == 'faster_coco_eval'  # installed by make install (requirements.txt)
    assert CocoMetric(backend='pycocotools').backend == 'pycocotools'
    monkeypatch.setitem(sys.modules, 'faster_coco_eval', None)  # import faster_coco_eval now raises ImportError
    assert CocoMetric(backend='auto').backend == 'pycocotools'
    with pytest.raises(ImportError, match='pip install faster-coco-eval'):
        CocoMetric(backend='faster_coco_eval')
    with pytest.raises(ValueError, match="'pycocotool'"):
        CocoMetric(backend='pycocotool')


def test_max_dets_must_increase():
    # faster-coco-eval sorts maxDets, pycocotools does not: other orders would give two sets of numbers
    with pytest.raises(ValueError, match='3 increasing values'):
        CocoMetric(max_dets=(100, 10, 1))
