"""Geometric and photometric transforms: boxes stay valid under random inputs, exact box arithmetic, speed paths
agree with plain float references."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from detkit.datasets.transforms import (Compose, Expand, MinIoURandomCrop, Normalize, PackDetInputs, Pad,
                                        PhotoMetricDistortion, RandomFlip, Resize)
from detkit.registry import TRANSFORMS
from detkit.structures.bbox_np import bbox_overlaps_np


def random_results(rng: np.random.Generator, max_side: int = 120) -> dict:
    """A random image with random boxes: some thin, some touching or crossing the border, some ignored."""
    h, w = (int(v) for v in rng.integers(8, max_side, 2))
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    n, k = int(rng.integers(0, 8)), int(rng.integers(0, 3))

    def boxes(m):
        xy = rng.uniform(0, 1, (m, 2)) * [w, h]
        wh = rng.uniform(0.5, 1, (m, 2)) * rng.uniform(0.02, 0.9, (m, 1)) * [w, h] + 0.1
        b = np.hstack([xy, np.minimum(xy + wh, [w, h])]).astype(np.float32)
        return b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]

    gt, ign = boxes(n), boxes(k)
    return dict(img=img, img_shape=(h, w), ori_shape=(h, w), gt_bboxes=gt,
                gt_labels=rng.integers(0, 5, len(gt)).astype(np.int64), gt_bboxes_ignore=ign,
                gt_labels_ignore=rng.integers(0, 5, len(ign)).astype(np.int64))


def assert_valid(r: dict) -> None:
    img = r['img']
    h, w = r['img_shape']
    assert img.shape[:2] == (h, w) if 'pad_shape' not in r else r['pad_shape'] == img.shape[:2]
    for bk, lk in (('gt_bboxes', 'gt_labels'), ('gt_bboxes_ignore', 'gt_labels_ignore')):
        b, lab = r[bk], r[lk]
        assert b.dtype == np.float32 and b.ndim == 2 and b.shape[1] == 4, (bk, b.dtype, b.shape)
        assert lab.dtype == np.int64 and len(lab) == len(b), (lk, len(lab), len(b))
        assert np.isfinite(b).all()
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all(), b
        assert (b[:, 2] <= w + 1e-3).all() and (b[:, 3] <= h + 1e-3).all(), (b, w, h)
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all(), b


TRANSFORM_CFGS = [
    dict(type='PhotoMetricDistortion'),
    dict(type='Expand', prob=0.8),
    dict(type='MinIoURandomCrop'),
    dict(type='Resize', scale=(37, 23)),
    dict(type='Resize', scale=(64, 48), keep_ratio=True),
    dict(type='Resize', scale_factor=0.37),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomFlip', prob=1.0, direction='vertical'),
    dict(type='RandomFlip', prob=1.0, direction='diagonal'),
    dict(type='Normalize', mean=[10, 20, 30], std=[2, 3, 4]),
    dict(type='Pad', size_divisor=32),
]


@pytest.mark.parametrize('cfg', TRANSFORM_CFGS, ids=lambda c: c['type'])
def test_each_transform_keeps_boxes_valid(cfg):
    t = TRANSFORMS.build(cfg)
    rng = np.random.default_rng(123)
    np.random.seed(123)
    for _ in range(150):
        r = random_results(rng)
        n_before = len(r['gt_bboxes'])
        out = t(r)
        assert_valid(out)
        assert len(out['gt_bboxes']) <= n_before


def test_ssd_train_pipeline_keeps_boxes_valid():
    pipeline = Compose([dict(type='PhotoMetricDistortion'), dict(type='Expand', prob=0.5),
                        dict(type='MinIoURandomCrop'), dict(type='Resize', scale=(64, 64)), dict(type='RandomFlip'),
                        dict(type='Normalize'), dict(type='PackDetInputs')])
    rng = np.random.default_rng(5)
    np.random.seed(5)
    for _ in range(150):
        out = pipeline(random_results(rng))
        assert out['inputs'].shape == (3, 64, 64) and out['inputs'].dtype == torch.float32
        b = out['gt_bboxes']
        assert len(b) == len(out['gt_labels'])
        assert ((b[:, 0] >= 0) & (b[:, 2] <= 64) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()


def test_resize_fixed_exact_boxes_and_scale_factor():
    img = np.zeros((100, 200, 3), np.uint8)
    r = Resize(scale=(300, 50))(dict(img=img, img_shape=(100, 200), gt_bboxes=np.array([[10, 20, 110, 90]],
                                     np.float32), gt_labels=np.array([1])))
    assert r['img'].shape == (50, 300, 3) and r['img_shape'] == (50, 300)
    assert r['scale_factor'] == (1.5, 0.5)
    np.testing.assert_allclose(r['gt_bboxes'], [[15, 10, 165, 45]])


def test_resize_keep_ratio_matches_mmcv_rule():
    # 640x480 into (1333, 800): factor min(1333/640, 800/480) = 1.6667 -> 1067x800
    img = np.zeros((480, 640, 3), np.uint8)
    r = Resize(scale=(1333, 800), keep_ratio=True)(dict(img=img, gt_bboxes=np.array([[64, 48, 640, 480]],
                                                   np.float32), gt_labels=np.array([0])))
    assert r['img'].shape[:2] == (800, 1067)
    sx, sy = r['scale_factor']
    assert sx == pytest.approx(1067 / 640) and sy == pytest.approx(800 / 480)
    np.testing.assert_allclose(r['gt_bboxes'], [[64 * sx, 48 * sy, 1067, 800]], rtol=1e-6)
    # portrait image: the long side meets 1333 first? no: 480x640 -> min(1333/640, 800/480) -> 800x1067
    r = Resize(scale=(1333, 800), keep_ratio=True)(dict(img=np.zeros((640, 480, 3), np.uint8)))
    assert r['img'].shape[:2] == (1067, 800)
    # a long thin image is limited by its long side
    r = Resize(scale=(1333, 800), keep_ratio=True)(dict(img=np.zeros((100, 2000, 3), np.uint8)))
    assert r['img'].shape[:2] == (67, 1333)


@pytest.mark.parametrize('h, w', [(480, 640), (500, 375), (612, 612), (427, 640), (333, 500), (100, 2000)])
def test_resize_floor_rounding_is_torchvision_detection_transform(h, w):
    """size_rounding='floor' gives the size torchvision's GeneralizedRCNNTransform(800, 1333) resizes to, and a
    float32 image resized bilinearly by OpenCV equals torch's interpolate on floats (align_corners=False)."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    tv = GeneralizedRCNNTransform(800, 1333, image_mean=[0.0] * 3, image_std=[1.0] * 3).eval()
    img = np.random.default_rng(h * w).uniform(0, 255, (h, w, 3)).astype(np.float32)
    expected = tv.resize(torch.from_numpy(img).permute(2, 0, 1))[0]  # (3, H', W')
    r = Resize(scale=(1333, 800), keep_ratio=True, size_rounding='floor')(dict(img=img))
    assert r['img'].shape[:2] == tuple(expected.shape[1:])
    # float32 weights computed in a different order: up to 0.04 grey levels (0.003 on average) on this worst-case
    # noise, 0.009 (1e-4 on average) on the shared photos, where a uint8 resize is off by up to 0.77 (0.26 on average)
    diff = np.abs(r['img'] - expected.permute(1, 2, 0).numpy())
    assert diff.max() < 0.05 and diff.mean() < 5e-3
    assert r['scale_factor'] == (r['img'].shape[1] / w, r['img'].shape[0] / h)


def test_resize_rounding_rules_differ_where_documented():
    img = np.zeros((480, 640, 3), np.uint8)
    assert Resize(scale=(1333, 800), keep_ratio=True)(dict(img=img))['img'].shape[:2] == (800, 1067)
    assert Resize(scale=(1333, 800), keep_ratio=True, size_rounding='floor')(dict(img=img))['img'].shape[:2] == \
        (800, 1066)
    assert Resize(scale_factor=0.5, size_rounding='floor')(dict(img=np.zeros((11, 13, 3), np.uint8)))[
        'img'].shape[:2] == (5, 6)
    with pytest.raises(ValueError, match='size_rounding'):
        Resize(scale=(10, 10), size_rounding='ceil')


@pytest.mark.parametrize('h, w, kwargs, size', [
    (1, 3000, dict(scale=(1333, 800), keep_ratio=True), (1, 1333)),  # 1 x 1333/3000 = 0.44 rounds half up to 0
    (3000, 1, dict(scale=(1333, 800), keep_ratio=True), (1333, 1)),
    (1, 1500, dict(scale=(1333, 800), keep_ratio=True, size_rounding='floor'), (1, 1333)),  # the _tv config: 0.89
    (1, 3, dict(scale_factor=0.3), (1, 1)),  # 0.3 -> 0, 0.9 -> 1
])
def test_resize_never_makes_a_side_of_zero_pixels(h, w, kwargs, size):
    """A side that would round to 0 px is 1 px; the boxes and scale factors follow the size actually made."""
    boxes = np.array([[0, 0, w / 2, h], [w / 4, 0, w, h / 2]], np.float32)
    r = Resize(**kwargs)(dict(img=np.full((h, w, 3), 7, np.uint8), gt_bboxes=boxes, gt_labels=np.array([0, 1])))
    assert r['img'].shape == (*size, 3) and r['img_shape'] == size and (r['img'] == 7).all()
    sx, sy = r['scale_factor']
    assert (sx, sy) == (size[1] / w, size[0] / h)
    np.testing.assert_allclose(r['gt_bboxes'], boxes * np.float32([sx, sy, sx, sy]), rtol=1e-6)


@pytest.mark.parametrize('transform', [RandomFlip(prob=1.0), Expand(ratio_range=(2, 2), prob=1.0)])
def test_flip_and_expand_drop_boxes_that_rounding_left_empty(transform):
    """A box 1e-6 px wide (a float32 ulp at x = 10) becomes 0 px wide when mirrored or shifted: it goes, with its
    label, as after Resize; the others stay."""
    boxes = np.array([[10, 10, np.nextafter(np.float32(10), np.float32(11)), 20], [1, 2, 3, 4]], np.float32)
    np.random.seed(0)  # Expand: the image goes 385 px right, where a float32 step is 3e-5 px
    r = transform(dict(img=np.zeros((20, 640, 3), np.uint8), img_shape=(20, 640), gt_bboxes=boxes,
                       gt_labels=np.array([0, 1])))
    assert r['gt_labels'].tolist() == [1] and r['gt_bboxes'].shape == (1, 4)
    assert (r['gt_bboxes'][:, 2:] - r['gt_bboxes'][:, :2] == 2).all()


def test_resize_clips_and_drops_with_labels():
    r = Resize(scale=(50, 50))(dict(img=np.zeros((100, 100, 3), np.uint8), gt_bboxes=np.array(
        [[-10, 0, 40, 40], [100, 0, 130, 10], [0, 0, 200, 200]], np.float32), gt_labels=np.array([1, 2, 3])))
    np.testing.assert_allclose(r['gt_bboxes'], [[0, 0, 20, 20], [0, 0, 50, 50]])
    np.testing.assert_array_equal(r['gt_labels'], [1, 3])


def test_flip_exact_and_involution():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (30, 100, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 30, 25], [0, 0, 100, 30]], np.float32)
    r = RandomFlip(prob=1.0)(dict(img=img, img_shape=(30, 100), gt_bboxes=boxes, gt_labels=np.array([0, 1])))
    np.testing.assert_array_equal(r['gt_bboxes'], [[70, 20, 90, 25], [0, 0, 100, 30]])
    np.testing.assert_array_equal(r['img'], img[:, ::-1])
    assert r['flip'] is True and r['flip_direction'] == 'horizontal'
    back = RandomFlip(prob=1.0)(dict(r))
    np.testing.assert_array_equal(back['gt_bboxes'], boxes)
    np.testing.assert_array_equal(back['img'], img)
    v = RandomFlip(prob=1.0, direction='vertical')(dict(img=img, gt_bboxes=boxes.copy(), gt_labels=np.arange(2)))
    np.testing.assert_array_equal(v['gt_bboxes'], [[10, 5, 30, 10], [0, 0, 100, 30]])
    np.testing.assert_array_equal(v['img'], img[::-1])
    n = RandomFlip(prob=0.0)(dict(img=img, gt_bboxes=boxes.copy(), gt_labels=np.arange(2)))
    assert n['flip'] is False and n['flip_direction'] is None and n['img'] is img
    with pytest.raises(ValueError, match='direction'):
        RandomFlip(direction='sideways')


def test_expand_places_image_and_shifts_boxes():
    rng = np.random.default_rng(1)
    np.random.seed(1)
    t = Expand(mean=(10, 20, 30), to_rgb=True, ratio_range=(2, 3), prob=1.0)
    for _ in range(20):
        img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
        boxes = np.array([[1, 2, 11, 12]], np.float32)
        r = t(dict(img=img, img_shape=(20, 30), gt_bboxes=boxes, gt_labels=np.array([4])))
        h, w = r['img'].shape[:2]
        assert 40 <= h <= 60 and 60 <= w <= 90 and r['img_shape'] == (h, w)
        ax, left, ay, top = r['orig_to_img']
        left, top = int(left), int(top)
        np.testing.assert_array_equal(r['img'][top:top + 20, left:left + 30], img)
        np.testing.assert_array_equal(r['gt_bboxes'], boxes + [left, top, left, top])
        canvas = r['img'].copy()
        canvas[top:top + 20, left:left + 30] = (30, 20, 10)
        assert (canvas == (30, 20, 10)).all()  # the fill is the mean in BGR order


def test_min_iou_crop_semantics():
    """Kept boxes: centre inside the patch, clipped and shifted; the patch meets the IoU rule of some mode."""
    rng = np.random.default_rng(2)
    np.random.seed(2)
    t = MinIoURandomCrop()
    cropped = 0
    for _ in range(200):
        r0 = random_results(rng)
        if len(r0['gt_bboxes']) == 0:
            continue
        orig = r0['gt_bboxes'].copy()
        labels = r0['gt_labels'].copy()
        img = r0['img']
        r = t(dict(r0))
        if 'orig_to_img' not in r:  # mode 1: untouched
            assert r['img'] is img
            continue
        cropped += 1
        _, bx, _, by = r['orig_to_img']
        x1, y1 = int(-bx), int(-by)
        h, w = r['img'].shape[:2]
        np.testing.assert_array_equal(r['img'], img[y1:y1 + h, x1:x1 + w])
        cx, cy = (orig[:, 0] + orig[:, 2]) / 2, (orig[:, 1] + orig[:, 3]) / 2
        inside = (cx > x1) & (cx < x1 + w) & (cy > y1) & (cy < y1 + h)
        assert inside.any()
        want = orig[inside].copy()
        want[:, 0::2] = np.clip(want[:, 0::2], x1, x1 + w) - x1
        want[:, 1::2] = np.clip(want[:, 1::2], y1, y1 + h) - y1
        keep = (want[:, 2] > want[:, 0]) & (want[:, 3] > want[:, 1])
        np.testing.assert_allclose(r['gt_bboxes'], want[keep], atol=1e-4)
        np.testing.assert_array_equal(r['gt_labels'], labels[inside][keep])
    assert cropped > 50


def test_min_iou_crop_respects_min_iou():
    """With one mode, every accepted patch has IoU >= that mode with every box."""
    np.random.seed(3)
    t = MinIoURandomCrop(min_ious=(0.5,))
    t.sample_mode = (0.5,)  # force the 0.5 mode
    box = np.array([[20, 20, 80, 80]], np.float32)
    for _ in range(50):
        r = t(dict(img=np.zeros((100, 100, 3), np.uint8), gt_bboxes=box.copy(), gt_labels=np.array([0])))
        _, bx, _, by = r['orig_to_img']
        h, w = r['img'].shape[:2]
        patch = np.array([[-bx, -by, -bx + w, -by + h]], np.float32)
        assert bbox_overlaps_np(patch, box)[0, 0] >= 0.5
        assert 0.5 <= h / w <= 2
    with pytest.raises(KeyError, match='LoadAnnotations'):
        MinIoURandomCrop()(dict(img=np.zeros((4, 4, 3), np.uint8)))


def test_photometric_u8_lut_path_matches_float_reference():
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    u8 = PhotoMetricDistortion._distort_u8
    fl = PhotoMetricDistortion._distort_float
    # brightness then contrast, folded in one table: equal to float math rounded once
    got = u8(img, 20.0, 1.3, None, None, None)
    want = np.clip(np.rint((img.astype(np.float32) + 20) * 1.3), 0, 255)
    np.testing.assert_array_equal(got, want)
    # contrast last
    np.testing.assert_array_equal(u8(img, None, None, None, None, 0.7),
                                  np.clip(np.rint(img.astype(np.float32) * 0.7), 0, 255))
    # saturation and hue through uint8 HSV: close to the float HSV path
    for sat, hue in ((1.4, None), (0.6, None), (None, 18.0), (None, -17.0), (1.2, 10.0)):
        a = u8(img, None, None, sat, hue, None).astype(np.float32)
        b = np.clip(fl(img.astype(np.float32), None, None, sat, hue, None), 0, 255)
        assert np.abs(a - b).mean() < 2.5, (sat, hue, np.abs(a - b).mean())


def test_photometric_keeps_shape_dtype_and_boxes():
    rng = np.random.default_rng(6)
    np.random.seed(6)
    t = PhotoMetricDistortion()
    for _ in range(30):
        r = random_results(rng)
        boxes = r['gt_bboxes'].copy()
        img = r['img'].copy()
        out = t(r)
        assert out['img'].shape == img.shape and out['img'].dtype == np.uint8
        np.testing.assert_array_equal(out['gt_bboxes'], boxes)
        np.testing.assert_array_equal(r['img'] if out['img'] is not r['img'] else img, img)
    f = t(dict(img=np.full((8, 8, 3), 100, np.float32)))
    assert f['img'].dtype == np.float32


def test_normalize_lut_equals_float_math():
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    out = Normalize(mean=mean, std=std, to_rgb=True)(dict(img=img))['img']
    want = (img[..., ::-1].astype(np.float64) - mean) / std
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, want, atol=1e-4)
    out = Normalize(mean=mean, std=std, to_rgb=False)(dict(img=img.astype(np.float32)))['img']
    np.testing.assert_allclose(out, (img - np.array(mean)) / std, atol=1e-4)


def test_pad_size_divisor_and_fixed_size():
    img = np.ones((33, 65, 3), np.uint8)
    r = Pad(size_divisor=32, pad_val=dict(img=7))(dict(img=img, img_shape=(33, 65)))
    assert r['img'].shape == (64, 96, 3) and r['pad_shape'] == (64, 96) and r['img_shape'] == (33, 65)
    assert (r['img'][:33, :65] == 1).all() and (r['img'][33:] == 7).all() and (r['img'][:, 65:] == 7).all()
    r = Pad(size=(70, 40))(dict(img=img))
    assert r['img'].shape == (40, 70, 3)
    with pytest.raises(ValueError, match='smaller'):
        Pad(size=(10, 10))(dict(img=img))
    r = Pad(pad_to_square=True)(dict(img=img))
    assert r['img'].shape == (65, 65, 3)


def test_pack_det_inputs_layout():
    img = np.random.default_rng(8).random((10, 12, 3)).astype(np.float32)
    out = PackDetInputs()(dict(img=img, img_id=5, img_path='x.jpg', sample_idx=2, ori_shape=(20, 24),
                               img_shape=(10, 12), scale_factor=(0.5, 0.5), flip=False, flip_direction=None,
                               gt_bboxes=np.array([[1, 2, 3, 4]], np.float32), gt_labels=np.array([3])))
    assert out['inputs'].shape == (3, 10, 12) and out['inputs'].is_contiguous()
    torch.testing.assert_close(out['inputs'], torch.from_numpy(img).permute(2, 0, 1))
    assert out['gt_labels'].dtype == torch.int64 and out['gt_bboxes_ignore'].shape == (0, 4)
    assert out['meta'] == dict(img_id=5, img_path='x.jpg', sample_idx=2, ori_shape=(20, 24), img_shape=(10, 12),
                               pad_shape=(10, 12), scale_factor=(0.5, 0.5), flip=False, flip_direction=None)


def test_compose_errors_name_the_problem():
    with pytest.raises(KeyError, match='Did you mean'):
        Compose([dict(type='Rezise', scale=(3, 3))])
    with pytest.raises(TypeError, match='step 0'):
        Compose([42])
    assert Compose([lambda r: None, dict(type='PackDetInputs')])(dict(img=np.zeros((2, 2, 3)))) is None


def test_transforms_do_not_modify_input_image_in_place():
    rng = np.random.default_rng(9)
    np.random.seed(9)
    for cfg in TRANSFORM_CFGS:
        r = random_results(rng)
        before = r['img'].copy()
        src = r['img']
        TRANSFORMS.build(cfg)(r)
        np.testing.assert_array_equal(src, before, err_msg=cfg['type'])


def test_resize_uses_cv2_bilinear():
    img = np.random.default_rng(10).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    out = Resize(scale=(30, 20))(dict(img=img))['img']
    np.testing.assert_array_equal(out, cv2.resize(img, (30, 20), interpolation=cv2.INTER_LINEAR))
