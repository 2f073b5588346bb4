"""LoadImageFromFile / LoadAnnotations: colour conversions, EXIF orientation, errors, annotations after Resize."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from detkit.datasets.transforms import Compose, ImageLoadError, LoadAnnotations, LoadImageFromFile, Resize


def _load(path, **kw):
    return LoadImageFromFile(**kw)(dict(img_path=str(path)))


def _pattern(h=40, w=60):
    """An RGB image with a distinct colour in each corner (orientation is checkable)."""
    img = np.full((h, w, 3), 128, np.uint8)
    img[:10, :15] = (255, 0, 0)     # top-left red
    img[:10, -15:] = (0, 255, 0)    # top-right green
    img[-10:, :15] = (0, 0, 255)    # bottom-left blue
    return img


def test_shared_jpegs_decode_to_bgr(shared_jpegs):
    for path in shared_jpegs:
        r = _load(path)
        assert r['img'].dtype == np.uint8 and r['img'].ndim == 3 and r['img'].shape[2] == 3
        assert r['ori_shape'] == r['img_shape'] == r['img'].shape[:2]
        # same pixels as PIL (BGR vs RGB), within JPEG decoder differences
        ref = np.asarray(Image.open(path).convert('RGB'))[..., ::-1].astype(int)
        assert np.abs(ref - r['img']).mean() < 1.0


def test_grayscale_file_becomes_three_equal_channels(tmp_path):
    gray = (np.arange(30 * 50).reshape(30, 50) % 256).astype(np.uint8)
    Image.fromarray(gray, mode='L').save(tmp_path / 'g.png')
    img = _load(tmp_path / 'g.png')['img']
    assert img.shape == (30, 50, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], gray)


def test_rgba_file_drops_alpha_to_bgr(tmp_path):
    rgb = _pattern()
    alpha = np.full(rgb.shape[:2], 100, np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), mode='RGBA').save(tmp_path / 'a.png')
    img = _load(tmp_path / 'a.png')['img']
    assert img.shape == (40, 60, 3)
    np.testing.assert_array_equal(img, rgb[..., ::-1])


@pytest.mark.parametrize('orientation, expected', [
    (1, lambda a: a),
    (3, lambda a: np.rot90(a, 2)),
    (6, lambda a: np.rot90(a, -1)),   # "rotate 90 CW to display"
    (8, lambda a: np.rot90(a, 1)),    # "rotate 90 CCW to display"
])
def test_exif_orientation_is_applied(tmp_path, orientation, expected):
    rgb = _pattern()
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f'exif{orientation}.jpg'
    im.save(path, exif=exif.tobytes(), quality=98)
    r = _load(path)
    want = expected(rgb)[..., ::-1].astype(int)
    assert r['img'].shape == want.shape
    assert r['ori_shape'] == want.shape[:2]
    assert np.abs(r['img'].astype(int) - want).mean() < 3


def test_color_type_grayscale_and_float(tmp_path):
    Image.fromarray(_pattern()).save(tmp_path / 'p.png')
    g = _load(tmp_path / 'p.png', color_type='grayscale')['img']
    assert g.shape == (40, 60, 3) and (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    f = _load(tmp_path / 'p.png', to_float32=True)['img']
    assert f.dtype == np.float32
    with pytest.raises(ValueError, match='color_type'):
        LoadImageFromFile(color_type='unchanged')


def test_missing_empty_and_corrupt_files_raise_image_load_error(tmp_path):
    with pytest.raises(ImageLoadError, match='not found'):
        _load(tmp_path / 'nope.jpg')
    (tmp_path / 'empty.jpg').write_bytes(b'')
    with pytest.raises(ImageLoadError, match='empty'):
        _load(tmp_path / 'empty.jpg')
    (tmp_path / 'bad.jpg').write_bytes(b'this is not a jpeg' * 10)
    with pytest.raises(ImageLoadError, match='bad.jpg'):
        _load(tmp_path / 'bad.jpg')


def _jpeg_bytes(progressive=False):
    rng = np.random.RandomState(0)
    img = cv2.GaussianBlur(rng.randint(0, 256, (48, 64, 3)).astype(np.uint8), (5, 5), 0)
    ok, buf = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 95,
                                         cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert ok
    return img, buf.tobytes()


def _with_thumbnail(jpeg):
    """The JPEG with an APP1 (EXIF-like) segment after SOI holding a tiny JPEG: a second end-of-image marker."""
    thumb = b'\xff\xd8\xff\xd9'
    payload = b'Exif\x00\x00' + thumb
    return jpeg[:2] + b'\xff\xe1' + (len(payload) + 2).to_bytes(2, 'big') + payload + jpeg[2:]


@pytest.mark.parametrize('progressive', [False, True])
def test_truncated_jpeg_is_unreadable_and_libjpeg_stays_quiet(tmp_path, capfd, progressive):
    _, jpeg = _jpeg_bytes(progressive)
    cases = {'cut.jpg': jpeg[:len(jpeg) * 6 // 10],
             'cut_thumb.jpg': _with_thumbnail(jpeg)[:len(jpeg) * 6 // 10 + 20],  # the thumbnail's EOI must not count
             'cut_header.jpg': jpeg[:100]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageLoadError, match=rf'{name}: truncated JPEG'):
            _load(tmp_path / name)
    # nothing reached the decoder, so libjpeg printed nothing ("Premature end of JPEG file" names no file)
    assert 'Premature end' not in capfd.readouterr().err


def test_complete_jpegs_with_trailing_bytes_or_a_thumbnail_still_load(tmp_path):
    _, jpeg = _jpeg_bytes()
    reference = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    for name, data in {'pad.jpg': jpeg + b'\x00' * 7, 'trailer.jpg': jpeg + b'appended data',
                       'thumb.jpg': _with_thumbnail(jpeg)}.items():
        (tmp_path / name).write_bytes(data)
        np.testing.assert_array_equal(_load(tmp_path / name)['img'], reference)


def _ann():
    return dict(bboxes=np.array([[10, 20, 110, 220], [0, 0, 640, 480]], np.float32), labels=np.array([3, 1]),
                bboxes_ignore=np.array([[5, 5, 50, 60]], np.float32), labels_ignore=np.array([2]))


def test_load_annotations_copies_and_types(shared_jpegs):
    ann = _ann()
    r = Compose([dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')])(
        dict(img_path=shared_jpegs[0], ann_info=ann))
    assert r['gt_bboxes'].dtype == np.float32 and r['gt_labels'].dtype == np.int64
    np.testing.assert_array_equal(r['gt_bboxes'], ann['bboxes'])
    np.testing.assert_array_equal(r['gt_labels_ignore'], [2])
    r['gt_bboxes'][0, 0] = -99  # the dataset's arrays are not aliased
    assert ann['bboxes'][0, 0] == 10
    with pytest.raises(KeyError, match='ann_info'):
        LoadAnnotations()(dict(img=np.zeros((4, 4, 3), np.uint8)))


def test_load_annotations_after_resize_equals_before(shared_jpegs):
    """A test pipeline that resizes first must still give boxes in input-image pixels."""
    first = Compose([dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                     dict(type='Resize', scale=(333, 200), keep_ratio=True)])
    later = Compose([dict(type='LoadImageFromFile'), dict(type='Resize', scale=(333, 200), keep_ratio=True),
                     dict(type='LoadAnnotations')])
    a = first(dict(img_path=shared_jpegs[1], ann_info=_ann()))
    b = later(dict(img_path=shared_jpegs[1], ann_info=_ann()))
    for key in ('gt_bboxes', 'gt_labels', 'gt_bboxes_ignore', 'gt_labels_ignore'):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6)
    assert a['scale_factor'] == b['scale_factor']


def test_load_annotations_after_flip_and_expand(shared_jpegs):
    np.random.seed(0)
    steps = [Resize(scale=(320, 240)), dict(type='RandomFlip', prob=1.0), dict(type='Expand', prob=1.0)]
    first = Compose([LoadImageFromFile(), LoadAnnotations()] + steps)
    np.random.seed(1)
    a = first(dict(img_path=shared_jpegs[2], ann_info=_ann()))
    later = Compose([LoadImageFromFile()] + steps + [LoadAnnotations()])
    np.random.seed(1)
    b = later(dict(img_path=shared_jpegs[2], ann_info=_ann()))
    assert a['img'].shape == b['img'].shape
    np.testing.assert_allclose(a['gt_bboxes'], b['gt_bboxes'], atol=1e-3)
    np.testing.assert_allclose(a['gt_bboxes_ignore'], b['gt_bboxes_ignore'], atol=1e-3)


def test_load_image_takes_mmdetection_3_backend_args_none_only(shared_jpegs):
    """mmdetection 3.x pipelines write ``LoadImageFromFile(backend_args=backend_args)`` with ``None``: the same
    image as without it; any other backend is refused by name (detkit reads local files only)."""
    from detkit.registry import TRANSFORMS
    from detkit.utils.errors import ConfigError

    plain = LoadImageFromFile()(dict(img_path=shared_jpegs[0]))['img']
    mmdet = TRANSFORMS.build(dict(type='LoadImageFromFile', backend_args=None))(dict(img_path=shared_jpegs[0]))['img']
    assert np.array_equal(plain, mmdet)
    with pytest.raises(ConfigError, match=r"LoadImageFromFile: backend_args=\{'backend': 'petrel'\} is not supported"):
        TRANSFORMS.build(dict(type='LoadImageFromFile', backend_args=dict(backend='petrel')))
