"""NMS: the compiled kernels against torchvision and a plain-Python reference; the fallback against the kernels."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision

from detkit.ops import batched_nms, batched_soft_nms, nms, soft_nms
from detkit.ops import nms_fallback
from detkit.ops._ext import ext_module, has_kernel

CUDA = torch.cuda.is_available() and has_kernel('nms', 'cuda')


def test_extension_is_built_and_registers_cpu_kernels():
    # `make test` builds detkit._C; the fallback must not silently stand in for it here.
    assert ext_module() is not None, 'detkit._C did not load: run `make install`'
    for op in ('nms', 'batched_nms', 'soft_nms', 'batched_soft_nms'):
        assert has_kernel(op, 'cpu'), op
    assert not has_kernel('no_such_op', 'cpu')  # an op missing from an older build: the fallback, no crash


# ---------------------------------------------------------------- inputs

def random_boxes(n: int, seed: int, canvas: float = 1000.0, size: float = 60.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * canvas
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * size + 1
    boxes = torch.cat([xy, xy + wh], 1).to(dtype)
    scores = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
    return boxes, scores


def clustered_boxes(n: int, seed: int, clusters: int = 50):
    """Jittered copies of a few boxes: heavy overlap, most boxes suppressed."""
    g = torch.Generator().manual_seed(seed)
    base, _ = random_boxes(clusters, seed + 1, canvas=500, size=200)
    pick = torch.randint(0, clusters, (n,), generator=g)
    boxes = base[pick] + torch.randn(n, 4, generator=g) * 6
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    return boxes, torch.rand(n, generator=g)


def adversarial_cases():
    """(name, boxes, scores): ties, duplicates, degenerate and extreme boxes."""
    cases = []
    b, s = random_boxes(300, 1, canvas=200, size=80)
    cases.append(('tied scores', b, torch.round(s * 4) / 4))
    one = torch.tensor([[10.0, 10.0, 50.0, 60.0]])
    cases.append(('identical boxes', one.repeat(20, 1), torch.rand(20, generator=torch.Generator().manual_seed(2))))
    cases.append(('identical boxes and scores', one.repeat(20, 1), torch.full((20,), 0.5)))
    b, s = random_boxes(200, 3, canvas=100, size=30)
    b[::3, 2] = b[::3, 0]  # zero width
    b[1::3, 3] = b[1::3, 1]  # zero height
    cases.append(('zero-area boxes', b, s))
    b, s = random_boxes(200, 4, canvas=100, size=30)
    cases.append(('huge coordinates', b * 1e4 + 1e7, s))
    b, s = random_boxes(200, 5, canvas=1e-3, size=1e-4)
    cases.append(('tiny coordinates', b, s))
    b, s = random_boxes(200, 6, canvas=100, size=40)
    b[:, 1] = 0
    b[:, 3] = 1000  # tall boxes: every pair overlaps in y, many in x
    cases.append(('tall boxes', b, s))
    b, s = random_boxes(100, 7, canvas=100, size=40)
    b[::4, [0, 2]] = b[::4, [2, 0]]  # x2 < x1: negative area, still well defined
    cases.append(('inverted boxes', b, s))
    return cases


# ---------------------------------------------------------------- plain-Python references

def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, thr: float, idxs=None) -> list[int]:
    """Greedy NMS, one pair at a time, with torchvision's arithmetic in the boxes' dtype (numpy scalars)."""
    b = boxes.numpy()
    s = scores.numpy()
    n = len(s)
    order = sorted(range(n), key=lambda i: (0 if math.isnan(s[i]) else 1, -s[i] if not math.isnan(s[i]) else 0, i))
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    suppressed = [False] * n
    keep = []
    for ii, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[ii + 1:]:
            if suppressed[j] or (idxs is not None and idxs[i] != idxs[j]):
                continue
            w = max(b.dtype.type(0), min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
            h = max(b.dtype.type(0), min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
            inter = w * h
            with np.errstate(invalid='ignore', divide='ignore'):
                ovr = inter / (area[i] + area[j] - inter)
            if float(ovr) > thr:  # compared in float64, as torchvision does
                suppressed[j] = True
    return keep


def soft_nms_reference(boxes, scores, thr, sigma, min_score, method):
    """Soft-NMS by its definition: select the max (a NaN score first; ties: the lowest index), decay the rest
    (a NaN IoU decays nothing), drop those below min_score. Returns (kept indices, their scores) in selection
    order."""
    b = boxes.numpy()
    s = scores.numpy().copy()
    t = b.dtype.type
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    alive = [i for i in range(len(s)) if not float(s[i]) < min_score]
    keep, kept = [], []
    while alive:
        best = alive[0]
        for j in alive[1:]:
            if math.isnan(s[best]):
                break
            if math.isnan(s[j]) or s[j] > s[best]:
                best = j
        keep.append(best)
        kept.append(s[best])
        alive.remove(best)
        nxt = []
        for j in alive:
            w = max(t(0), min(b[best, 2], b[j, 2]) - max(b[best, 0], b[j, 0]))
            h = max(t(0), min(b[best, 3], b[j, 3]) - max(b[best, 1], b[j, 1]))
            with np.errstate(invalid='ignore', divide='ignore', over='ignore'):
                inter = w * h
                iou = inter / (area[best] + area[j] - inter)
                if math.isnan(iou):
                    pass
                elif method == 'linear':
                    if float(iou) > thr:
                        s[j] = s[j] * (t(1) - iou)
                else:
                    s[j] = s[j] * np.exp(-(iou * iou) / t(sigma))
            if not float(s[j]) < min_score:
                nxt.append(j)
        alive = nxt
    return keep, np.array(kept, dtype=b.dtype)


def batched_soft_nms_reference(boxes, scores, idxs, thr, sigma, min_score, method):
    """Class-aware soft-NMS by its definition: the plain soft-NMS above on each class's boxes alone, then every
    kept box of every class in the documented order (NaN scores first, then descending score, then ascending
    index). Returns (kept indices, their scores)."""
    labels = idxs.tolist()
    kept = []  # (input index, decayed score)
    for c in sorted(set(labels)):
        members = [i for i, v in enumerate(labels) if v == c]
        m = torch.tensor(members, dtype=torch.long)
        keep, sc = soft_nms_reference(boxes[m], scores[m], thr, sigma, min_score, method)
        kept += [(members[k], v) for k, v in zip(keep, sc)]
    kept.sort(key=lambda e: (0, 0.0, e[0]) if math.isnan(e[1]) else (1, -float(e[1]), e[0]))
    return [i for i, _ in kept], np.array([v for _, v in kept], dtype=boxes.numpy().dtype)


# ---------------------------------------------------------------- hard NMS

@pytest.mark.parametrize('n', [0, 1, 2, 10, 100, 1000, 5000])
@pytest.mark.parametrize('thr', [0.3, 0.45, 0.5, 0.7])
def test_nms_equals_torchvision_random(n, thr):
    boxes, scores = random_boxes(n, seed=n)
    expected = torchvision.ops.nms(boxes, scores, thr)
    got = nms(boxes, scores, thr)
    assert got.dtype == torch.int64
    assert torch.equal(got, expected)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_nms_equals_torchvision_clustered(dtype):
    boxes, scores = clustered_boxes(3000, 0)
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    expected = torchvision.ops.nms(boxes, scores, 0.5)
    assert len(expected) < 1000  # the case is about heavy suppression
    assert torch.equal(nms(boxes, scores, 0.5), expected)


@pytest.mark.parametrize('case', adversarial_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize('thr', [0.0, 0.5, 0.95])
def test_nms_adversarial_equals_torchvision_and_reference(case, thr):
    _, boxes, scores = case
    expected = torchvision.ops.nms(boxes, scores, thr)
    got = nms(boxes, scores, thr)
    assert torch.equal(got, expected)
    assert got.tolist() == nms_reference(boxes, scores, thr)


def test_nms_100k_boxes():
    boxes, scores = clustered_boxes(100_000, 1, clusters=300)
    expected = torchvision.ops.nms(boxes, scores, 0.5)
    assert torch.equal(nms(boxes, scores, 0.5), expected)


@pytest.mark.parametrize('n', [1, 7, 60, 300])
def test_nms_equals_plain_python_reference(n):
    boxes, scores = random_boxes(n, seed=100 + n, canvas=150, size=80)
    assert nms(boxes, scores, 0.5).tolist() == nms_reference(boxes, scores, 0.5)


def test_threshold_between_floats_is_compared_in_double():
    # IoU of these boxes is exactly 0.5 in float32; a threshold a hair below 0.5 must suppress (as torchvision),
    # though float32(threshold) rounds to 0.5.
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    thr = 0.5 - 1e-12
    assert torchvision.ops.nms(boxes, scores, thr).tolist() == [0]
    assert nms(boxes, scores, thr).tolist() == [0]
    assert nms_fallback.nms_torch(boxes, scores, thr).tolist() == [0]
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]  # strictly greater suppresses


def test_negative_threshold_suppresses_disjoint_boxes():
    boxes, scores = random_boxes(50, 9)
    expected = torchvision.ops.nms(boxes, scores, -0.1)
    assert expected.tolist() == [int(scores.argmax())]
    assert torch.equal(nms(boxes, scores, -0.1), expected)
    assert torch.equal(nms_fallback.nms_torch(boxes, scores, -0.1), expected)


def test_nan_boxes_and_scores_never_crash_and_follow_the_documented_rule():
    boxes, scores = random_boxes(200, 11, canvas=100, size=50)
    boxes[5, 0] = float('nan')
    boxes[17, 3] = float('nan')
    scores[3] = float('nan')
    scores[40] = float('nan')
    got = nms(boxes, scores, 0.5)
    # NaN scores are visited first (NaN sorts before numbers, ties by index); NaN boxes are always kept
    assert got[:2].tolist() == [3, 40]
    assert {5, 17} <= set(got.tolist())
    assert torch.equal(got, torchvision.ops.nms(boxes, scores, 0.5))
    assert torch.equal(nms_fallback.nms_torch(boxes, scores, 0.5), got)
    idxs = torch.arange(200) % 3
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5), nms_fallback.batched_nms_torch(boxes, scores, idxs, 0.5))
    dets, keep = soft_nms(boxes, scores)
    assert keep[:2].tolist() == [3, 40] and torch.isnan(dets[:2, 4]).all()
    assert {5, 17} <= set(keep.tolist())


def test_half_precision_is_computed_in_float32():
    boxes, scores = random_boxes(500, 12)
    got = nms(boxes.half(), scores.half(), 0.5)
    assert torch.equal(got, torchvision.ops.nms(boxes.half().float(), scores.half().float(), 0.5))


# ---------------------------------------------------------------- batched NMS

@pytest.mark.parametrize('n,num_classes', [(0, 1), (1, 1), (100, 3), (2000, 20), (6000, 80)])
def test_batched_nms_equals_torchvision(n, num_classes):
    boxes, scores = random_boxes(n, seed=n + 1, canvas=300, size=100)
    idxs = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(n))
    expected = torchvision.ops.batched_nms(boxes, scores, idxs, 0.45)
    got = batched_nms(boxes, scores, idxs, 0.45)
    assert torch.equal(got, expected)
    if n <= 100:
        assert got.tolist() == nms_reference(boxes, scores, 0.45, idxs.tolist())


def test_batched_nms_huge_coordinates_stay_exact():
    # torchvision's offset trick would add class * (max_coordinate + 1); detkit compares classes instead.
    boxes, scores = random_boxes(300, 13, canvas=100, size=40)
    boxes = boxes * 1e3 + 1e7
    idxs = torch.randint(0, 5, (300,), generator=torch.Generator().manual_seed(1))
    assert batched_nms(boxes, scores, idxs, 0.5).tolist() == nms_reference(boxes, scores, 0.5, idxs.tolist())


def run_with_threads(threads: int, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def test_batched_nms_parallel_classes_equal_per_class_nms():
    # 40,000 boxes: above the kernel's 32,768, so its classes run in parallel (with 2 threads)
    boxes, scores = random_boxes(40_000, 14, canvas=3000, size=100)
    idxs = torch.randint(0, 10, (40_000,), generator=torch.Generator().manual_seed(14))
    expected = torch.cat([m[nms(boxes[m], scores[m], 0.5)] for m in ((idxs == c).nonzero().squeeze(1)
                                                                     for c in range(10))])
    expected = expected.sort()[0]  # then by score, equal scores (float32 rand repeats some) by index
    expected = expected[torch.sort(scores[expected], descending=True, stable=True)[1]]
    assert torch.equal(run_with_threads(2, lambda: batched_nms(boxes, scores, idxs, 0.5)), expected)
    assert torch.equal(run_with_threads(1, lambda: batched_nms(boxes, scores, idxs, 0.5)), expected)


def test_batched_nms_is_per_class_nms():
    boxes, scores = clustered_boxes(1500, 3)
    idxs = torch.randint(0, 4, (1500,), generator=torch.Generator().manual_seed(3))
    got = set(batched_nms(boxes, scores, idxs, 0.5).tolist())
    expected = set()
    for c in range(4):
        m = (idxs == c).nonzero().squeeze(1)
        expected |= set(m[torchvision.ops.nms(boxes[m], scores[m], 0.5)].tolist())
    assert got == expected


# ---------------------------------------------------------------- soft-NMS

@pytest.mark.parametrize('method', ['linear', 'gaussian'])
@pytest.mark.parametrize('n', [0, 1, 5, 150])
def test_soft_nms_equals_reference(method, n):
    boxes, scores = random_boxes(n, seed=200 + n, canvas=120, size=70)
    dets, keep = soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=0.05, method=method)
    ref_keep, ref_scores = soft_nms_reference(boxes, scores, 0.3, 0.5, 0.05, method)
    assert keep.tolist() == ref_keep
    assert dets.shape == (len(ref_keep), 5)
    torch.testing.assert_close(dets[:, :4], boxes[keep])
    torch.testing.assert_close(dets[:, 4], torch.from_numpy(ref_scores), rtol=1e-5, atol=1e-7)
    assert bool((dets[1:, 4] <= dets[:-1, 4]).all()), 'selected scores must not increase'
    assert bool((dets[:, 4] >= 0.05).all())


def test_soft_nms_linear_keeps_disjoint_and_decays_overlap():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = soft_nms(boxes, scores, iou_threshold=0.3, method='linear', min_score=0.0)
    # box 1 has IoU 0.5 with box 0: 0.8 * (1 - 0.5) = 0.4, now below box 2
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.9, 0.7, 0.4]))
    dets, keep = soft_nms(boxes, scores, sigma=0.5, method='gaussian', min_score=0.0)
    # gaussian decays every box: 0.8 * exp(-0.5^2 / 0.5) = 0.485; box 2 does not overlap box 0
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.9, 0.7, 0.8 * math.exp(-0.25 / 0.5)]))


def test_exp_nonpositive_is_accurate():
    # the gaussian weight's exp, shared bit for bit by the kernel and the fallback (compared through them below)
    for dtype, low, max_ulp in ((torch.float32, -104.0, 1.25), (torch.float64, -746.0, 1.25)):
        g = torch.Generator().manual_seed(0)
        x = torch.cat([-torch.rand(20000, generator=g, dtype=torch.float64) * 3,
                       torch.rand(20000, generator=g, dtype=torch.float64) * low]).to(dtype)
        got = nms_fallback.exp_nonpositive(x).double()
        exact = torch.tensor([math.exp(v) for v in x.tolist()], dtype=torch.float64)  # within 1 ulp of float64
        normal = exact >= torch.finfo(dtype).tiny
        ulp = torch.finfo(dtype).eps * torch.exp2(torch.floor(torch.log2(exact[normal])))
        assert float(((got[normal] - exact[normal]).abs() / ulp).max()) <= max_ulp
        edge = torch.tensor([0.0, -0.0, -1e-30, low, low - 1, float('-inf')], dtype=dtype)
        assert nms_fallback.exp_nonpositive(edge).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


# ---------------------------------------------------------------- batched soft-NMS

def labels_for(n: int, num_classes: int, seed: int) -> torch.Tensor:
    return torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(seed))


def assert_identical(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal value for value (NaN equal to NaN), dtypes and shapes included."""
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def assert_batched_soft_nms_matches(boxes, scores, idxs, thr, sigma, min_score, method):
    """The op against the per-class reference, and the compiled kernel against the fallback, bit for bit."""
    dets, keep = batched_soft_nms(boxes, scores, idxs, thr, sigma, min_score, method)
    ref_keep, ref_scores = batched_soft_nms_reference(boxes, scores, idxs, thr, sigma, min_score, method)
    assert keep.dtype == torch.int64 and dets.dtype == boxes.dtype
    assert keep.tolist() == ref_keep
    assert_identical(dets[:, :4], boxes[keep])
    ref_scores = torch.from_numpy(ref_scores)
    if method == 'linear':  # the same IEEE operations as the reference: equal to the bit
        assert_identical(dets[:, 4], ref_scores)
    else:  # the reference's np.exp and the kernels' exp_nonpositive may differ in the last bit
        torch.testing.assert_close(dets[:, 4], ref_scores, rtol=1e-5, atol=1e-7, equal_nan=True)
    fb_dets, fb_keep = nms_fallback.batched_soft_nms_torch(boxes, scores, idxs, thr, sigma, min_score, method)
    assert torch.equal(fb_keep, keep)
    assert_identical(fb_dets, dets)
    return dets, keep


@pytest.mark.parametrize('method', ['linear', 'gaussian'])
@pytest.mark.parametrize('n,num_classes', [(1, 1), (10, 3), (150, 6), (400, 30), (300, 300)])
def test_batched_soft_nms_equals_per_class_reference(method, n, num_classes):
    boxes, scores = random_boxes(n, seed=300 + n, canvas=120, size=70)  # crowded: most boxes decay
    idxs = labels_for(n, num_classes, seed=n)
    dets, keep = assert_batched_soft_nms_matches(boxes, scores, idxs, 0.3, 0.5, 0.05, method)
    assert bool((dets[1:, 4] <= dets[:-1, 4]).all()), 'scores must not increase'
    assert bool((dets[:, 4] >= 0.05).all())
    if n >= 150:
        assert bool((dets[:, 4] < scores[keep]).any()), 'the case is about decays'


@pytest.mark.parametrize('method', ['linear', 'gaussian'])
def test_batched_soft_nms_many_classes_clustered(method):
    boxes, scores = clustered_boxes(800, 4, clusters=20)
    idxs = labels_for(800, 80, seed=4)
    assert_batched_soft_nms_matches(boxes, scores, idxs, 0.3, 0.5, 1e-3, method)


def one_class_cases():
    cases = [('random', *random_boxes(300, 21, canvas=150, size=70)), ('clustered', *clustered_boxes(500, 22))]
    return cases + adversarial_cases()


@pytest.mark.parametrize('case', one_class_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize('method', ['linear', 'gaussian'])
def test_batched_soft_nms_with_one_class_equals_soft_nms(case, method):
    _, boxes, scores = case
    expected = soft_nms(boxes, scores, 0.3, 0.5, 1e-3, method)
    for label in (0, -3):
        dets, keep = batched_soft_nms(boxes, scores, torch.full((len(scores),), label), 0.3, 0.5, 1e-3, method)
        assert torch.equal(keep, expected[1])
        assert torch.equal(dets, expected[0])


@pytest.mark.parametrize('method', ['linear', 'gaussian'])
def test_batched_soft_nms_parallel_classes(method):
    # 2 classes x ~1,500 boxes: 4.5M box pairs, above the kernel's 2^20, so the classes run in parallel
    boxes, scores = random_boxes(3000, 91, canvas=600, size=100)
    idxs = labels_for(3000, 2, seed=91) * 7 - 3
    parallel = run_with_threads(2, lambda: batched_soft_nms(boxes, scores, idxs, method=method))
    serial = run_with_threads(1, lambda: batched_soft_nms(boxes, scores, idxs, method=method))
    fallback = nms_fallback.batched_soft_nms_torch(boxes, scores, idxs, 0.3, 0.5, 1e-3, method)
    for dets, keep in (serial, fallback):
        assert torch.equal(keep, parallel[1]) and torch.equal(dets, parallel[0])


def test_batched_soft_nms_classes_do_not_interact():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    # one class: box 1 (IoU 0.5 with box 0) decays to 0.8 * 0.5 = 0.4; box 2 (IoU 1) to 0.7 * 0 = 0, dropped
    dets, keep = batched_soft_nms(boxes, scores, torch.tensor([0, 0, 0]), 0.3, min_score=1e-3)
    assert keep.tolist() == [0, 1]
    assert dets[:, 4].tolist() == pytest.approx([0.9, 0.4])
    # box 2 in a class of its own keeps its score; box 1 still decays by box 0
    dets, keep = batched_soft_nms(boxes, scores, torch.tensor([5, 5, 2]), 0.3, min_score=1e-3)
    assert keep.tolist() == [0, 2, 1]
    assert dets[:, 4].tolist() == pytest.approx([0.9, 0.7, 0.4])
    dets, keep = batched_soft_nms(boxes, scores, torch.tensor([0, 1, 2]), 0.3, method='gaussian')
    assert keep.tolist() == [0, 1, 2] and torch.equal(dets[:, 4], scores)


def test_batched_soft_nms_order_of_ties_nan_and_signed_zeros():
    # disjoint boxes, so nothing decays and the order is the documented one alone:
    # NaN first, then descending score, equal scores (0.0 == -0.0) by ascending input index, across classes
    n = 10
    x = torch.arange(n, dtype=torch.float32) * 20
    boxes = torch.stack([x, torch.zeros(n), x + 10, torch.full((n,), 10.0)], 1)
    scores = torch.tensor([0.5, 0.7, 0.0, 0.5, float('nan'), -0.0, 0.7, float('nan'), 0.5, 0.0])
    idxs = torch.tensor([3, 1, 1, 2, 3, 3, 2, 1, 1, 2])
    dets, keep = assert_batched_soft_nms_matches(boxes, scores, idxs, 0.3, 0.5, 0.0, 'linear')
    assert keep.tolist() == [4, 7, 1, 6, 0, 3, 8, 2, 5, 9]
    # identical boxes with identical scores in one class: the lowest index is selected first, the others decay
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(4, 1)
    dets, keep = assert_batched_soft_nms_matches(boxes, torch.full((4,), 0.5), torch.tensor([0, 1, 0, 1]), 0.3,
                                                 0.5, 1e-3, 'gaussian')
    e = math.exp(-1 / 0.5)  # IoU 1
    assert keep.tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.5, 0.5, 0.5 * e, 0.5 * e]))


def test_batched_soft_nms_nan_boxes_and_scores():
    boxes, scores = random_boxes(200, 31, canvas=100, size=50)
    boxes[5, 0] = float('nan')
    boxes[17, 3] = float('nan')
    scores[3] = float('nan')
    scores[40] = float('nan')
    idxs = labels_for(200, 4, seed=31)
    for method in ('linear', 'gaussian'):
        dets, keep = assert_batched_soft_nms_matches(boxes, scores, idxs, 0.3, 0.5, 1e-3, method)
        # NaN scores first by index; a NaN box is never decayed (and decays nothing)
        assert keep[:2].tolist() == [3, 40] and torch.isnan(dets[:2, 4]).all()
        rows = {i: r for r, i in enumerate(keep.tolist())}
        assert dets[rows[5], 4] == scores[5] and dets[rows[17], 4] == scores[17]


def test_min_score_is_compared_in_double():
    # Box 1 (IoU 0.5 with box 0) decays from float32(0.2) to exactly float32(0.1) = 0.10000000149...; a min_score
    # a hair above that must drop it, though it rounds to the same float32: the kernels compare float scores with
    # the double min_score, at the start and after every decay.
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    scores, idxs = torch.tensor([0.9, 0.2]), torch.tensor([2, 2])
    s32 = float(torch.tensor(0.1))
    for min_score, kept in ((0.1, 2), (s32, 2), (s32 + 1e-12, 1)):
        for dets, keep in (soft_nms(boxes, scores, 0.3, min_score=min_score),
                           batched_soft_nms(boxes, scores, idxs, 0.3, min_score=min_score),
                           nms_fallback.soft_nms_torch(boxes, scores, 0.3, 0.5, min_score, 'linear'),
                           nms_fallback.batched_soft_nms_torch(boxes, scores, idxs, 0.3, 0.5, min_score, 'linear')):
            assert len(keep) == kept, min_score
            assert dets[-1, 4] == (s32 if kept == 2 else 0.9)


def test_batched_soft_nms_float64():
    boxes, scores = random_boxes(300, 41, canvas=150, size=70, dtype=torch.float64)
    idxs = labels_for(300, 5, seed=41)
    for method in ('linear', 'gaussian'):
        dets, _ = assert_batched_soft_nms_matches(boxes, scores, idxs, 0.3, 0.5, 1e-3, method)
        assert dets.dtype == torch.float64


def test_batched_soft_nms_idxs_values_and_dtypes_do_not_matter():
    boxes, scores = random_boxes(300, 51, canvas=150, size=70)
    dense = labels_for(300, 4, seed=51)
    expected = batched_soft_nms(boxes, scores, dense)
    # gaps, negatives, int64 beyond int32 (the class order of the input is irrelevant too)
    spread = torch.tensor([2 ** 40, -7, 0, 1000])[dense]
    for idxs in (spread, dense.int(), dense.to(torch.int16), dense.to(torch.uint8), (3 - dense).to(torch.int8)):
        dets, keep = batched_soft_nms(boxes, scores, idxs)
        assert torch.equal(keep, expected[1]) and torch.equal(dets, expected[0])
    assert_batched_soft_nms_matches(boxes, scores, spread, 0.3, 0.5, 1e-3, 'linear')


def test_batched_soft_nms_order_is_by_score_even_when_selection_order_is_not():
    # A negative score (min_score < 0) grows when it decays: box 1 (-0.4) is selected first, then box 0
    # decays from -0.5 to -0.25. soft_nms reports the selection order; batched_soft_nms sorts by score.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])
    scores = torch.tensor([-0.5, -0.4])
    assert soft_nms(boxes, scores, 0.3, min_score=-1.0)[1].tolist() == [1, 0]
    dets, keep = assert_batched_soft_nms_matches(boxes, scores, torch.tensor([0, 0]), 0.3, 0.5, -1.0, 'linear')
    assert keep.tolist() == [0, 1] and dets[:, 4].tolist() == pytest.approx([-0.25, -0.4])
    # +inf * (1 - IoU 1) is NaN: selected after the +inf box, listed before it
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(2, 1)
    scores = torch.tensor([float('inf'), float('inf')])
    assert soft_nms(boxes, scores)[1].tolist() == [0, 1]
    dets, keep = assert_batched_soft_nms_matches(boxes, scores, torch.tensor([0, 0]), 0.3, 0.5, 1e-3, 'linear')
    assert keep.tolist() == [1, 0] and torch.isnan(dets[0, 4]) and dets[1, 4] == float('inf')
    # many classes with negative scores: per-class lists need sorting before the merge
    boxes, scores = random_boxes(300, 61, canvas=120, size=70)
    assert_batched_soft_nms_matches(boxes, scores - 0.5, labels_for(300, 7, seed=61), 0.3, 0.5, -0.4, 'linear')


def test_batched_soft_nms_empty_results():
    dets, keep = batched_soft_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert dets.shape == (0, 5) and keep.shape == (0,) and keep.dtype == torch.int64
    # every score below min_score: nothing is kept, by either backend
    boxes, scores = random_boxes(20, 71)
    idxs = torch.arange(20) % 3
    for dets, keep in (batched_soft_nms(boxes, scores * 0.1, idxs, min_score=0.5),
                       nms_fallback.batched_soft_nms_torch(boxes, scores * 0.1, idxs, 0.3, 0.5, 0.5, 'linear')):
        assert dets.shape == (0, 5) and keep.shape == (0,) and keep.dtype == torch.int64


# ---------------------------------------------------------------- fallback == compiled

@pytest.mark.parametrize('seed', range(3))
def test_fallback_equals_compiled(seed):
    for boxes, scores in (random_boxes(3000, seed), clustered_boxes(2000, seed)):
        for thr in (0.3, 0.5, 0.8):
            assert torch.equal(nms_fallback.nms_torch(boxes, scores, thr), torch.ops.detkit.nms(boxes, scores, thr))
            idxs = torch.randint(0, 7, (len(scores),), generator=torch.Generator().manual_seed(seed))
            assert torch.equal(nms_fallback.batched_nms_torch(boxes, scores, idxs, thr),
                               torch.ops.detkit.batched_nms(boxes, scores, idxs, thr))
    boxes, scores = random_boxes(300, seed, canvas=150, size=70)
    for method, code in (('linear', 0), ('gaussian', 1)):
        d1, k1 = nms_fallback.soft_nms_torch(boxes, scores, 0.3, 0.5, 1e-3, method)
        d2, k2 = torch.ops.detkit.soft_nms(boxes, scores, 0.3, 0.5, 1e-3, code)
        assert torch.equal(k1, k2)
        assert torch.equal(d1, d2)  # gaussian too: both use exp_nonpositive's arithmetic


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('method,sigma,min_score', [('linear', 0.5, 1e-3), ('gaussian', 0.5, 1e-3),
                                                    ('gaussian', 0.01, 0.0)])
def test_batched_soft_nms_fallback_equals_compiled(dtype, method, sigma, min_score):
    # sigma 0.01 takes exp down to exp(-100), and min_score 0 keeps every box however tiny its score gets
    # (subnormal, or 0 in float32): the underflow end of exp_nonpositive
    code = {'linear': 0, 'gaussian': 1}[method]
    for boxes, scores, idxs in ((*random_boxes(2000, 81, canvas=300, size=100), labels_for(2000, 20, 81)),
                                (*clustered_boxes(1500, 82), labels_for(1500, 5, 82))):
        boxes, scores = boxes.to(dtype), scores.to(dtype)
        d1, k1 = nms_fallback.batched_soft_nms_torch(boxes, scores, idxs, 0.3, sigma, min_score, method)
        d2, k2 = torch.ops.detkit.batched_soft_nms(boxes, scores, idxs, 0.3, sigma, min_score, code)
        assert len(k2) > 100
        assert torch.equal(k1, k2)
        assert torch.equal(d1, d2)


@pytest.mark.parametrize('case', adversarial_cases(), ids=lambda c: c[0])
def test_fallback_adversarial(case):
    _, boxes, scores = case
    for thr in (0.0, 0.5):
        assert torch.equal(nms_fallback.nms_torch(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr))


@pytest.mark.parametrize('case', adversarial_cases(), ids=lambda c: c[0])
def test_batched_soft_nms_fallback_adversarial(case):
    _, boxes, scores = case
    idxs = labels_for(len(scores), 3, seed=len(scores))
    for method in ('linear', 'gaussian'):
        d1, k1 = nms_fallback.batched_soft_nms_torch(boxes, scores, idxs, 0.3, 0.5, 1e-3, method)
        d2, k2 = batched_soft_nms(boxes, scores, idxs, 0.3, 0.5, 1e-3, method)
        assert torch.equal(k1, k2) and torch.equal(d1, d2)


def test_fallback_long_suppression_chain():
    # each box overlaps only its neighbours, scores decrease along the chain: the greedy answer alternates
    n = 3000
    x = torch.arange(n, dtype=torch.float32) * 3
    boxes = torch.stack([x, torch.zeros(n), x + 10, torch.ones(n) * 10], 1)
    scores = torch.linspace(1, 0.1, n)
    expected = torchvision.ops.nms(boxes, scores, 0.5)
    assert torch.equal(nms_fallback.nms_torch(boxes, scores, 0.5), expected)
    assert torch.equal(nms(boxes, scores, 0.5), expected)


def test_fallback_is_used_and_warns_once_when_the_extension_is_missing(monkeypatch):
    from detkit.ops import _ext
    monkeypatch.setitem(_ext._state, 'loaded', True)
    monkeypatch.setitem(_ext._state, 'module', None)
    monkeypatch.setitem(_ext._state, 'error', 'ImportError: test')
    monkeypatch.setitem(_ext._state, 'warned', set())
    boxes, scores = random_boxes(100, 1)
    with pytest.warns(RuntimeWarning, match='make install'):
        got = nms(boxes, scores, 0.5)
    assert torch.equal(got, torchvision.ops.nms(boxes, scores, 0.5))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        nms(boxes, scores, 0.5)  # only one warning per op
    idxs = torch.arange(100) % 4
    with pytest.warns(RuntimeWarning, match='batched_soft_nms uses the pure-PyTorch fallback'):
        dets, keep = batched_soft_nms(boxes, scores, idxs, method='gaussian')
    expected = torch.ops.detkit.batched_soft_nms(boxes, scores, idxs, 0.3, 0.5, 1e-3, 1)
    assert torch.equal(keep, expected[1]) and torch.equal(dets, expected[0])


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize('call,match', [
    (lambda: nms(torch.zeros(5, 3), torch.zeros(5), 0.5), 'boxes must have shape'),
    (lambda: nms(torch.zeros(5, 4), torch.zeros(4), 0.5), 'same length'),
    (lambda: nms(torch.zeros(5, 4), torch.zeros(5, 1), 0.5), 'scores must have shape'),
    (lambda: nms(torch.zeros(5, 4, dtype=torch.int64), torch.zeros(5), 0.5), 'boxes must be floating point'),
    (lambda: nms(torch.zeros(5, 4), torch.zeros(5, dtype=torch.int64), 0.5), 'scores must be floating point'),
    (lambda: nms([[0, 0, 1, 1]], torch.zeros(1), 0.5), 'boxes must be a torch.Tensor'),
    (lambda: nms(torch.zeros(5, 4), torch.zeros(5), 'high'), 'iou_threshold must be a number'),
    (lambda: batched_nms(torch.zeros(5, 4), torch.zeros(5), torch.zeros(4, dtype=torch.long), 0.5), 'idxs'),
    (lambda: batched_nms(torch.zeros(5, 4), torch.zeros(5), torch.zeros(5), 0.5), 'idxs must be an integer'),
    (lambda: soft_nms(torch.zeros(5, 4), torch.zeros(5), method='hard'), 'method must be one of'),
    (lambda: soft_nms(torch.zeros(5, 4), torch.zeros(5), sigma=0, method='gaussian'), 'sigma must be > 0'),
    (lambda: batched_soft_nms(torch.zeros(5, 4), torch.zeros(5), torch.zeros(4, dtype=torch.long)),
     r'idxs must be a tensor of shape \(5,\) matching boxes, got \(4,\)'),
    (lambda: batched_soft_nms(torch.zeros(5, 4), torch.zeros(5), [0, 0, 0, 0, 0]), 'idxs must be a tensor'),
    (lambda: batched_soft_nms(torch.zeros(5, 4), torch.zeros(5), torch.zeros(5)), 'idxs must be an integer'),
    (lambda: batched_soft_nms(torch.zeros(5, 4), torch.zeros(5), torch.zeros(5, dtype=torch.bool)),
     'idxs must be an integer'),
    (lambda: batched_soft_nms(torch.zeros(5, 3), torch.zeros(5), torch.zeros(5, dtype=torch.long)),
     'boxes must have shape'),
    (lambda: batched_soft_nms(torch.zeros(5, 4), torch.zeros(6), torch.zeros(5, dtype=torch.long)), 'same length'),
    (lambda: batched_soft_nms(torch.zeros(5, 4), torch.zeros(5), torch.zeros(5, dtype=torch.long), method='soft'),
     'method must be one of'),
    (lambda: batched_soft_nms(torch.zeros(5, 4), torch.zeros(5), torch.zeros(5, dtype=torch.long), sigma=-1.0,
                              method='gaussian'), 'sigma must be > 0'),
    (lambda: batched_soft_nms(torch.zeros(5, 4), torch.zeros(5), torch.zeros(5, dtype=torch.long), min_score='0'),
     'min_score must be a number'),
    (lambda: batched_soft_nms(torch.zeros(5, 4), torch.zeros(5), torch.zeros(5, dtype=torch.long),
                              iou_threshold=None), 'iou_threshold must be a number'),
])
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize('args,match', [
    ((torch.zeros(5, 4), torch.zeros(5), torch.zeros(4, dtype=torch.long), 0.3, 0.5, 1e-3, 0),
     r'detkit::batched_soft_nms: idxs must be a \(N,\) tensor matching dets'),
    ((torch.zeros(5, 4), torch.zeros(5), torch.zeros(5), 0.3, 0.5, 1e-3, 0),
     'detkit::batched_soft_nms: idxs must be integer'),
    ((torch.zeros(5, 4), torch.zeros(5), torch.zeros(5, dtype=torch.long), 0.3, 0.5, 1e-3, 2),
     r'detkit::batched_soft_nms: method must be 0 \(linear\) or 1 \(gaussian\), got 2'),
    ((torch.zeros(5, 4), torch.zeros(5), torch.zeros(5, dtype=torch.long), 0.3, 0.0, 1e-3, 1),
     'detkit::batched_soft_nms: sigma must be > 0'),
    ((torch.zeros(5, 4), torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.long), 0.3, 0.5, 1e-3, 0),
     'detkit::batched_soft_nms: dets and scores must have the same dtype'),
    ((torch.zeros(5, 4), torch.zeros(3), torch.zeros(5, dtype=torch.long), 0.3, 0.5, 1e-3, 0),
     r'detkit::batched_soft_nms: scores must be a \(N,\) tensor matching dets'),
])
def test_compiled_batched_soft_nms_checks_its_arguments(args, match):
    # the op called directly (torch.ops.detkit.batched_soft_nms), without the Python wrapper's checks
    with pytest.raises(RuntimeError, match=match):
        torch.ops.detkit.batched_soft_nms(*args)


def test_empty_input_gives_empty_output():
    empty = torch.zeros(0, 4)
    assert nms(empty, torch.zeros(0), 0.5).shape == (0,)
    assert batched_nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).shape == (0,)
    dets, keep = soft_nms(empty, torch.zeros(0))
    assert dets.shape == (0, 5) and keep.shape == (0,) and keep.dtype == torch.int64


@pytest.mark.parametrize('op', ['nms', 'batched_nms', 'soft_nms'])
def test_meta_tensors_are_refused_before_any_kernel_or_warning(op, recwarn):
    boxes, scores = torch.rand(6, 4, device='meta'), torch.rand(6, device='meta')
    calls = {'nms': lambda: nms(boxes, scores, 0.5),
             'batched_nms': lambda: batched_nms(boxes, scores, torch.zeros(6, dtype=torch.long, device='meta'), 0.5),
             'soft_nms': lambda: soft_nms(boxes, scores)}
    with pytest.raises(ValueError, match=r'meta tensors.*need real data.*torch\.export'):
        calls[op]()
    assert not [w for w in recwarn if 'META' in str(w.message)]  # no misleading "built without a META kernel"


def test_ops_are_visible_to_export():
    class Post(torch.nn.Module):
        def forward(self, boxes, scores, labels):
            keep = torch.ops.detkit.batched_nms(boxes, scores, labels, 0.5)
            dets, _ = torch.ops.detkit.soft_nms(boxes, scores, 0.3, 0.5, 0.001, 0)
            return keep, dets

    boxes, scores = random_boxes(50, 1)
    labels = torch.arange(50) % 3
    exported = torch.export.export(Post(), (boxes, scores, labels))
    graph = str(exported.graph)
    assert 'detkit.batched_nms' in graph and 'detkit.soft_nms' in graph
    keep, dets = exported.module()(boxes, scores, labels)
    assert torch.equal(keep, torchvision.ops.batched_nms(boxes, scores, labels, 0.5))
    assert dets.shape[1] == 5


def test_batched_soft_nms_is_visible_to_export():
    class Post(torch.nn.Module):
        def forward(self, boxes, scores, labels):
            return torch.ops.detkit.batched_soft_nms(boxes, scores, labels, 0.3, 0.5, 0.001, 1)

    boxes, scores = random_boxes(60, 2, canvas=200, size=80)
    labels = torch.arange(60) % 4
    exported = torch.export.export(Post(), (boxes, scores, labels))
    assert 'detkit.batched_soft_nms' in str(exported.graph)
    dets, keep = exported.module()(boxes, scores, labels)
    expected = batched_soft_nms(boxes, scores, labels, 0.3, 0.5, 0.001, 'gaussian')
    assert torch.equal(keep, expected[1]) and torch.equal(dets, expected[0])
    # the fake kernel: one new data-dependent size shared by both outputs
    out = [n for n in exported.graph.nodes if 'batched_soft_nms' in str(n.target)][0]
    dets_shape, keep_shape = (v.shape for v in out.meta['val'])
    assert dets_shape[1] == 5 and str(dets_shape[0]) == str(keep_shape[0])


# ---------------------------------------------------------------- CUDA (skips without a GPU)

@pytest.mark.skipif(not CUDA, reason='needs a GPU and detkit._C built with CUDA')
@pytest.mark.parametrize('n', [0, 1, 100, 5000, 20000])
def test_cuda_nms_equals_cpu(n):
    boxes, scores = random_boxes(n, n)
    expected = nms(boxes, scores, 0.5)
    assert torch.equal(nms(boxes.cuda(), scores.cuda(), 0.5).cpu(), expected)
    idxs = torch.randint(0, 10, (n,))
    expected = batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5).cpu(), expected)


@pytest.mark.skipif(not CUDA, reason='needs a GPU and detkit._C built with CUDA')
@pytest.mark.parametrize('n', [0, 1, 500])
def test_cuda_batched_soft_nms_equals_cpu(n):
    boxes, scores = random_boxes(n, n, canvas=300, size=100)
    idxs = labels_for(n, 7, seed=n)
    expected = batched_soft_nms(boxes, scores, idxs)
    dets, keep = batched_soft_nms(boxes.cuda(), scores.cuda(), idxs.cuda())
    assert dets.is_cuda and keep.is_cuda
    assert torch.equal(keep.cpu(), expected[1]) and torch.equal(dets.cpu(), expected[0])


@pytest.mark.skipif(not CUDA, reason='needs a GPU and detkit._C built with CUDA')
@pytest.mark.parametrize('case', adversarial_cases(), ids=lambda c: c[0])
def test_cuda_adversarial(case):
    _, boxes, scores = case
    assert torch.equal(nms(boxes.cuda(), scores.cuda(), 0.5).cpu(), nms(boxes, scores, 0.5))
