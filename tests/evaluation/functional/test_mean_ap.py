"""eval_map: hand-computed cases in both modes, ignore boxes, empty classes, and a plain reference on random data."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from detkit.evaluation import average_precision, eval_map


def dets(*rows):
    return np.array(rows, np.float32).reshape(-1, 5)


def ann(boxes, labels, ignore=(), ignore_labels=()):
    return dict(bboxes=np.array(boxes, np.float32).reshape(-1, 4), labels=np.array(labels, np.int64),
                bboxes_ignore=np.array(ignore, np.float32).reshape(-1, 4),
                labels_ignore=np.array(ignore_labels, np.int64))


def hand_case():
    """Class 0: 3 boxes (A, B in image 0; C in image 1) and one ignored box D in image 1.

    detections, by score:        match
      d1 0.9 img0 = A             TP
      d2 0.8 img1 = D (ignored)   neither
      d3 0.7 img0 ~ A (IoU 0.9)   FP (A already taken)
      d4 0.6 img1 = C             TP
      d5 0.5 img0 far away        FP
    Class 1 has nothing, class 2 only detections (no ground truth), class 3 only ground truth.
    """
    A, B, C, D = [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10], [50, 50, 60, 60]
    det_results = [
        [dets([*A, .9], [0, 0, 10, 9, .7], [100, 100, 110, 110, .5]), dets(), dets([0, 0, 5, 5, .3]), dets()],
        [dets([*D, .8], [*C, .6]), dets(), dets(), dets()],
    ]
    annotations = [ann([A, B, [1, 1, 4, 4]], [0, 0, 3]), ann([C], [0], [D], [0])]
    return det_results, annotations


def test_hand_computed_area_mode():
    det_results, annotations = hand_case()
    mean_ap, res = eval_map(det_results, annotations, mode='area', logger='silent')
    # after dropping the ignored d2: TP FP TP FP -> recall 1/3 1/3 2/3 2/3, precision 1 1/2 2/3 1/2
    # (mmdetection keeps the ignored detection as a 0/0 step: recall 1/3 twice, precision 1 twice)
    np.testing.assert_allclose(res[0]['recall'], [1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(res[0]['precision'], [1, 1, 1 / 2, 2 / 3, 1 / 2])
    # area under the envelope: 1/3 * 1 + 1/3 * 2/3
    assert res[0]['ap'] == pytest.approx(1 / 3 + 2 / 9)
    assert (res[0]['num_gts'], res[0]['num_dets']) == (3, 5)
    assert (res[1]['num_gts'], res[1]['ap']) == (0, 0.0)
    assert (res[2]['num_gts'], res[2]['num_dets'], res[2]['ap']) == (0, 1, 0.0)
    assert (res[3]['num_gts'], res[3]['num_dets'], res[3]['ap']) == (1, 0, 0.0)
    # classes 1 and 2 have no ground truth: left out of the mean
    assert mean_ap == pytest.approx((1 / 3 + 2 / 9 + 0.0) / 2)


def test_hand_computed_11_points():
    det_results, annotations = hand_case()
    mean_ap, res = eval_map(det_results, annotations, mode='11points', logger='silent')
    # recall >= 0, .1, .2, .3 -> best precision 1; >= .4, .5, .6 -> 2/3; >= .7 ... 1 -> 0
    assert res[0]['ap'] == pytest.approx((4 * 1 + 3 * 2 / 3) / 11)
    assert mean_ap == pytest.approx((4 + 2) / 11 / 2)


def test_iou_threshold_and_legacy_coordinate():
    gt = [ann([[0, 0, 10, 10]], [0])]
    d = [[dets([0, 0, 10, 4.9, .9])]]
    # IoU 49/100 without +1; (11 * 5.9) / 121 = 0.536 with the VOC devkit's +1
    assert eval_map(d, gt, logger='silent')[0] == 0.0
    assert eval_map(d, gt, use_legacy_coordinate=True, logger='silent')[0] == 1.0
    assert eval_map(d, gt, iou_thr=0.45, logger='silent')[0] == 1.0


def test_detection_takes_best_box_not_second_best():
    """Two detections on the same best box: the second is a FP even though another box overlaps it."""
    gt = [ann([[0, 0, 10, 10], [0, 0, 10, 14]], [0, 0])]
    d = [[dets([0, 0, 10, 10, .9], [0, 0, 10, 11, .8])]]  # both best-match box 0 (IoU 1.0 and 0.91)
    _, res = eval_map(d, gt, logger='silent')
    np.testing.assert_allclose(res[0]['precision'], [1, 0.5])
    np.testing.assert_allclose(res[0]['recall'], [0.5, 0.5])


def test_ignored_boxes_neither_help_nor_hurt():
    gt_plain = [ann([[0, 0, 10, 10]], [0])]
    gt_ign = [ann([[0, 0, 10, 10]], [0], [[20, 20, 30, 30]], [0])]
    d_plain = [[dets([0, 0, 10, 10, .5])]]
    d_extra = [[dets([0, 0, 10, 10, .5], [20, 20, 30, 30, .9], [21, 21, 30, 30, .8])]]
    ap_plain = eval_map(d_plain, gt_plain, logger='silent')[0]
    assert ap_plain == 1.0
    assert eval_map(d_extra, gt_ign, logger='silent')[0] == 1.0  # the ignore detections are not FPs
    assert eval_map(d_extra, gt_plain, logger='silent')[0] < 1.0  # without the ignore box they are


def test_table_and_logger_forms(capsys, caplog):
    det_results, annotations = hand_case()
    eval_map(det_results, annotations, classes=('cat', 'dog', 'cow', 'emu'))
    out = capsys.readouterr().out
    for word in ('class', 'gts', 'dets', 'recall', 'ap', 'cat', 'emu', 'mAP', '0.667'):
        assert word in out
    lines = []
    eval_map(det_results, annotations, logger=lines.append)
    assert 'mAP' in lines[0]
    with caplog.at_level(logging.INFO, logger='t'):
        eval_map(det_results, annotations, logger=logging.getLogger('t'))
    assert 'mAP' in caplog.text
    with pytest.raises(ValueError, match='mode'):
        eval_map(det_results, annotations, mode='101points')
    with pytest.raises(ValueError, match='2 images of detections but 1'):
        eval_map(det_results, annotations[:1])


def test_average_precision_edge_cases():
    assert average_precision(np.zeros(0), np.zeros(0), 'area') == 0.0
    assert average_precision(np.zeros(0), np.zeros(0), '11points') == 0.0
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)
    # recall exactly 0.7 does not reach np.arange's 0.7000000000000001 (the reference's own rounding)
    assert average_precision(np.array([0.7]), np.array([1.0]), '11points') == pytest.approx(7 / 11)
    np.testing.assert_allclose(average_precision(np.array([[0.5, 1.0]] * 2), np.array([[1.0, 0.5]] * 2)),
                               [0.75, 0.75])


# ---------------------------------------------------------------------------------------------- plain reference
def ref_iou(a, b, extra):
    ious = np.zeros((len(a), len(b)), np.float32)
    for i in range(len(a)):
        for j in range(len(b)):
            iw = max(min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]) + extra, 0)
            ih = max(min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]) + extra, 0)
            inter = np.float32(iw) * np.float32(ih)
            area_a = (a[i, 2] - a[i, 0] + extra) * (a[i, 3] - a[i, 1] + extra)
            area_b = (b[j, 2] - b[j, 0] + extra) * (b[j, 3] - b[j, 1] + extra)
            ious[i, j] = inter / max(area_a + area_b - inter, np.finfo(np.float32).eps)
    return ious


def ref_eval_map(det_results, annotations, iou_thr, mode, legacy):
    """mmdetection's tpfp_default + average_precision written as plain loops."""
    extra = 1.0 if legacy else 0.0
    aps, num_gts_all = [], []
    for c in range(len(det_results[0])):
        tps, fps, scores, num_gts = [], [], [], 0
        for img_dets, a in zip(det_results, annotations):
            d = img_dets[c]
            g = a['bboxes'][a['labels'] == c]
            gi = a['bboxes_ignore'][a['labels_ignore'] == c]
            num_gts += len(g)
            boxes = np.vstack([g, gi])
            ignore = [False] * len(g) + [True] * len(gi)
            tp, fp = [0.0] * len(d), [0.0] * len(d)
            if len(boxes) == 0:
                fp = [1.0] * len(d)
            else:
                ious = ref_iou(d[:, :4], boxes, extra)
                covered = [False] * len(boxes)
                for i in sorted(range(len(d)), key=lambda k: -d[k, 4]):
                    j = int(np.argmax(ious[i]))
                    if ious[i, j] >= iou_thr:
                        if not ignore[j]:
                            if not covered[j]:
                                covered[j] = True
                                tp[i] = 1.0
                            else:
                                fp[i] = 1.0
                    else:
                        fp[i] = 1.0
            tps += tp
            fps += fp
            scores += list(d[:, 4])
        order = sorted(range(len(scores)), key=lambda k: -scores[k])
        tp_c = np.cumsum([tps[k] for k in order])
        fp_c = np.cumsum([fps[k] for k in order])
        eps = np.finfo(np.float32).eps
        rec = tp_c / max(num_gts, eps)
        prec = tp_c / np.maximum(tp_c + fp_c, eps)
        if mode == 'area':
            mrec = [0.0, *rec, 1.0]
            mpre = [0.0, *prec, 0.0]
            for i in range(len(mpre) - 1, 0, -1):
                mpre[i - 1] = max(mpre[i - 1], mpre[i])
            ap = sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])
        else:
            ap = 0.0
            for t in np.arange(0, 1 + 1e-3, 0.1):
                p = [prec[i] for i in range(len(rec)) if rec[i] >= t]
                ap += max(p) if p else 0.0
            ap /= 11
        aps.append(ap)
        num_gts_all.append(num_gts)
    valid = [ap for ap, n in zip(aps, num_gts_all) if n > 0]
    return (float(np.mean(valid)) if valid else 0.0), aps


def random_case(rng, num_imgs=25, num_classes=4):
    det_results, annotations = [], []
    for _ in range(num_imgs):
        m, k = int(rng.integers(0, 6)), int(rng.integers(0, 3))
        xy = rng.integers(0, 80, (m + k, 2))
        wh = rng.integers(3, 40, (m + k, 2))
        boxes = np.hstack([xy, xy + wh]).astype(np.float32)
        labels = rng.integers(0, num_classes, m + k)
        annotations.append(ann(boxes[:m], labels[:m], boxes[m:], labels[m:]))
        per_class = []
        for c in range(num_classes):
            # jittered copies of this class's boxes (true and duplicate hits) plus random false positives
            src = boxes[labels == c]
            n_hit = int(rng.integers(0, 2 * len(src) + 1)) if len(src) else 0
            hits = src[rng.integers(0, len(src), n_hit)] + rng.normal(0, 3, (n_hit, 4)) if n_hit else np.zeros((0, 4))
            n_fp = int(rng.integers(0, 3))
            fxy = rng.integers(0, 100, (n_fp, 2))
            fps = np.hstack([fxy, fxy + rng.integers(2, 30, (n_fp, 2))])
            b = np.vstack([hits, fps]).astype(np.float32)
            b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 0.5)
            per_class.append(np.hstack([b, rng.random((len(b), 1)).astype(np.float32)]))
        det_results.append(per_class)
    return det_results, annotations


@pytest.mark.parametrize('mode', ['area', '11points'])
@pytest.mark.parametrize('iou_thr, legacy', [(0.5, False), (0.3, True), (0.75, False)])
def test_matches_plain_reference_on_random_data(mode, iou_thr, legacy):
    rng = np.random.default_rng(int(iou_thr * 100) + legacy)
    for _ in range(4):
        det_results, annotations = random_case(rng)
        mean_ap, res = eval_map(det_results, annotations, iou_thr=iou_thr, mode=mode,
                                use_legacy_coordinate=legacy, logger='silent')
        ref_mean, ref_aps = ref_eval_map(det_results, annotations, iou_thr, mode, legacy)
        np.testing.assert_allclose([r['ap'] for r in res], ref_aps, rtol=0, atol=1e-12)
        assert mean_ap == pytest.approx(ref_mean, abs=1e-12)
        assert 0 < mean_ap < 1
