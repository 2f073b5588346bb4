"""init_detector / inference_detector on the toy parts, and the result exchange formats."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import toy
import torch

from detkit.apis import build_test_pipeline, inference_detector, init_detector
from detkit.apis.results import label_to_category, to_coco_detections, to_per_class_arrays
from detkit.engine.checkpoint import save_checkpoint
from detkit.datasets import collate


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A toy config file and a checkpoint that stores the class names the way the trainer does."""
    root = tmp_path_factory.mktemp('toy')
    cfg_path = toy.write_toy_config(str(root / 'toy_cfg.py'), str(root / 'work'), data_root=str(root / 'data'))
    torch.manual_seed(0)
    model = toy.ToyDetector()
    save_checkpoint({'state_dict': model.state_dict(), 'meta': {'dataset_meta': {'classes': ('a', 'b')}}},
                    root / 'w.pth')
    toy.ToyDataset(num_images=2, data_root=str(root / 'data'))  # writes the images
    return cfg_path, str(root / 'w.pth'), model, root


def test_init_detector_loads_weights_and_classes(trained):
    cfg_path, ckpt, model, _ = trained
    det = init_detector(cfg_path, ckpt, device='cpu')
    assert not det.training and det.dataset_meta['classes'] == ('a', 'b')
    for k, v in model.state_dict().items():
        assert torch.equal(det.state_dict()[k], v)
    # without a checkpoint the names come from the test dataset's class (ToyDataset.METAINFO)
    assert init_detector(cfg_path).dataset_meta['classes'] == toy.CLASSES
    # cfg_options apply
    assert init_detector(cfg_path, cfg_options={'model.width': 4}).cls_conv.in_channels == 4


def test_pipeline_starts_after_loading():
    from mmengine.config import Config
    transforms, load_opts = build_test_pipeline(Config(toy.toy_cfg_dict('/tmp/unused')))
    assert [type(t).__name__ for t in transforms] == ['ToyResize', 'ToyNormalize', 'ToyPackDetInputs']
    assert load_opts == {}


def test_path_array_and_list_give_the_same_original_pixel_boxes(trained):
    cfg_path, ckpt, model, root = trained
    det = init_detector(cfg_path, ckpt)
    path = str(root / 'data' / 'toy_001.png')
    img = cv2.imread(path)
    r_path = inference_detector(det, path)
    r_arr = inference_detector(det, img)
    r_list = inference_detector(det, [img, path])
    assert isinstance(r_list, list) and len(r_list) == 2
    for k in ('boxes', 'scores', 'labels'):
        assert torch.equal(r_arr[k], r_path[k])
        for r in r_list:  # batched convolutions may round differently in the last bits
            torch.testing.assert_close(r[k], r_path[k])
    assert r_path['boxes'].shape[1] == 4 and r_path['boxes'].dtype == torch.float32
    assert len(r_path['boxes']) == len(r_path['scores']) == len(r_path['labels']) > 0

    # the same as predicting by hand on the pipeline's input, rescaled from 64x64 back to the 80x60 original
    sample = toy.ToyDataset(num_images=2, pipeline=toy.toy_pipeline())[1]
    images, _, metas = collate([sample])
    by_hand = model.eval().predict(images, metas, rescale=False)[0]
    scale = torch.tensor([64 / 80, 64 / 60, 64 / 80, 64 / 60])
    torch.testing.assert_close(r_path['boxes'], (by_hand['boxes'] / scale).clamp(min=0))
    assert r_path['boxes'][:, 0::2].max() <= 80 and r_path['boxes'][:, 1::2].max() <= 60


def test_bad_inputs_name_the_problem(trained):
    cfg_path, ckpt, _, root = trained
    det = init_detector(cfg_path, ckpt)
    with pytest.raises(FileNotFoundError, match='nothing.jpg'):
        inference_detector(det, str(root / 'nothing.jpg'))
    with pytest.raises(ValueError, match='H x W x 3'):
        inference_detector(det, np.zeros((4, 4, 4), np.uint8))
    gray = inference_detector(det, np.full((60, 80), 90, np.uint8))  # grey images are accepted
    assert gray['boxes'].shape[1] == 4
    assert inference_detector(det, []) == []


def test_image_arrays_are_validated_up_front(trained):
    cfg_path, ckpt, _, root = trained
    det = init_detector(cfg_path, ckpt)
    img = cv2.resize(cv2.imread(str(root / 'data' / 'toy_001.png')), (64, 64))  # the pipeline's size: no resampling
    expected = inference_detector(det, img)
    # floats within 0..255 are the same picture
    for dtype in (np.float64, np.float32):
        got = inference_detector(det, img.astype(dtype))
        for k in ('boxes', 'scores', 'labels'):
            torch.testing.assert_close(got[k], expected[k])
    with pytest.raises(TypeError, match=r'uint16.*uint8'):
        inference_detector(det, img.astype(np.uint16) * 257)  # 16-bit data would silently be nonsense
    with pytest.raises(TypeError, match='bool'):
        inference_detector(det, img > 100)
    with pytest.raises(TypeError, match='int32'):
        inference_detector(det, img.astype(np.int32))
    with pytest.raises(ValueError, match=r'0\.\.255.*300'):
        inference_detector(det, img.astype(np.float32) + 300)
    with pytest.raises(ValueError, match='NaN'):
        inference_detector(det, np.full((8, 8, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match=r'empty.*\(0, 0, 3\)'):
        inference_detector(det, np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ValueError, match=r'image 1 .*empty'):  # which image of a list
        inference_detector(det, [img, np.zeros((0, 5), np.uint8)])


def test_a_truncated_image_file_is_an_error_naming_it(trained):
    _, ckpt, _, root = trained
    det = init_detector(trained[0], ckpt)
    ok, buf = cv2.imencode('.jpg', np.full((60, 80, 3), 90, np.uint8))
    (root / 'cut.jpg').write_bytes(buf.tobytes()[:300])
    with pytest.raises(OSError, match=r'cut\.jpg: truncated JPEG'):
        inference_detector(det, str(root / 'cut.jpg'))


def _preds():
    return [(1, {'img_id': 'b'}, dict(boxes=np.array([[0, 0, 10, 10]], np.float32), scores=np.array([0.5], np.float32),
                                      labels=np.array([0]))),
            (0, {'img_id': 'a'}, dict(boxes=np.array([[1, 2, 4, 8], [0, 0, 1, 1]], np.float32),
                                      scores=np.array([0.9, 0.1], np.float32), labels=np.array([1, 0])))]


def test_coco_detections_use_category_ids_and_xywh():
    recs = to_coco_detections(_preds(), toy.ToyDataset(num_images=1))   # cat_ids = [10, 20]
    assert recs[1] == dict(image_id='a', category_id=20, bbox=[1.0, 2.0, 3.0, 6.0], score=pytest.approx(0.9))
    assert [r['category_id'] for r in recs] == [10, 20, 10]

    class Voc:
        pass

    class Coco:
        label2cat = {0: 7, 1: 3}

    assert label_to_category(Voc())(2) == 3            # label + 1 when the dataset has no mapping
    assert label_to_category(Coco())(1) == 3


def test_per_class_arrays():
    out = to_per_class_arrays(_preds(), num_classes=3)
    assert len(out) == 2 and all(len(per_img) == 3 for per_img in out)
    assert out[1][0].shape == (1, 5) and out[1][1].dtype == np.float32
    np.testing.assert_allclose(out[1][1], [[1, 2, 4, 8, 0.9]])
    assert out[0][2].shape == (0, 5)


def test_inference_does_not_import_the_training_engine():
    """detkit.apis reads weights (detkit.utils.checkpoint_io) and datasets' helpers without the engine."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ('import sys, numpy as np\n'
            'from detkit.apis import inference_detector, init_detector\n'
            'from detkit.apis.results import to_coco_detections\n'
            'model = init_detector("configs/quickstart/ssd_shapes.py", device="cpu")\n'
            'inference_detector(model, np.zeros((64, 64, 3), np.uint8))\n'
            'print(sorted(m for m in sys.modules if m.startswith("detkit.engine")))\n')
    out = subprocess.run([sys.executable, '-c', code], cwd=root, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=root))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == '[]'


# ------------------------------------------------------------------ issue 17 item 16: another architecture
_TINY_RETINANET = dict(
    type='SingleStageDetector',
    backbone=dict(type='ResNet', depth=18, out_indices=(1, 2, 3), base_channels=8),
    neck=dict(type='FPN', out_channels=16, start_level=0, num_outs=3),
    bbox_head=dict(type='RetinaHead', num_classes=4, stacked_convs=1, feat_channels=16,
                   anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=1,
                                         ratios=[1.0], strides=[8, 16, 32])),
    test_cfg=dict(nms_pre=100, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=10))


def test_a_checkpoint_of_another_architecture_is_one_error_naming_it_and_both_configs(tmp_path):
    """tools/test.py, demo.py and export_onnx.py load weights through init_detector (--resume: see
    tests/utils/test_checkpoint_io.py): a RetinaNet checkpoint given with an SSD config is one line naming the
    checkpoint, the config it was trained with (its meta) and the config given, not torch's list of keys."""
    import sys
    from pathlib import Path

    from mmengine.config import Config

    from detkit.registry import MODELS
    from detkit.utils.checkpoint_io import CheckpointError

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'models' / 'detectors'))
    try:
        from tiny_ssd import tiny_ssd_cfg
    finally:
        sys.path.pop(0)
    ssd_cfg = tmp_path / 'tiny_ssd.py'
    ssd_cfg.write_text(f'model = {tiny_ssd_cfg(num_classes=4)!r}\n')
    trained = Config(dict(model=_TINY_RETINANET, work_dir='work_dirs/tiny_retinanet'))
    ckpt = tmp_path / 'epoch_3.pth'
    save_checkpoint({'state_dict': MODELS.build(_TINY_RETINANET).state_dict(),
                     'meta': {'config': trained.pretty_text, 'dataset_meta': {'classes': ('a', 'b', 'c', 'd')}}},
                    ckpt)
    with pytest.raises(CheckpointError) as err:
        init_detector(str(ssd_cfg), str(ckpt))
    msg = str(err.value)
    assert '\n' not in msg and 'Error(s) in loading state_dict' not in msg
    assert str(ckpt) in msg
    assert 'Trained with: work_dir work_dirs/tiny_retinanet, model SingleStageDetector(backbone=ResNet, neck=FPN, ' \
           'bbox_head=RetinaHead)' in msg
    assert f'Config given: {ssd_cfg}, model SingleStageDetector(backbone=SSDVGG, neck=SSDNeck, bbox_head=SSDHead)' \
           in msg
    ssd_keys = set(MODELS.build(tiny_ssd_cfg(num_classes=4)).state_dict())
    retina_keys = set(MODELS.build(_TINY_RETINANET).state_dict())
    assert f'missing from the checkpoint: {len(ssd_keys - retina_keys)} of {len(ssd_keys)} model weights' in msg
    assert f'not in the model: {len(retina_keys - ssd_keys)} of {len(retina_keys)} checkpoint weights' in msg
