"""Data loading: epoch-seeded shuffling, worker seeding, evaluation order."""
import cv2
import numpy as np
import pytest
import toy
import torch
from torch.utils.data import Dataset

from detkit.engine import setup_env
from detkit.engine.data import build_dataloader
from detkit.engine.evaluator import evaluate


class Indices(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {'inputs': torch.zeros(3, 2, 2),
                'meta': {'idx': i, 'np': float(np.random.rand()), 'cv2_threads': cv2.getNumThreads()}}


def _order(loader):
    return [m['idx'] for b in loader for m in b.metas]


def test_train_order_is_a_function_of_seed_and_epoch():
    cfg = dict(batch_size=3, num_workers=0, shuffle=True)
    a = build_dataloader(cfg, train=True, seed=5, dataset=Indices())
    b = build_dataloader(cfg, train=True, seed=5, dataset=Indices())
    orders = []
    for epoch in (0, 1):
        a.sampler.set_epoch(epoch)
        b.sampler.set_epoch(epoch)
        torch.manual_seed(epoch)  # the global RNG must not matter
        oa = _order(a)
        torch.manual_seed(epoch + 100)
        assert oa == _order(b)
        assert oa == torch.randperm(10, generator=torch.Generator().manual_seed(5 + epoch)).tolist()
        orders.append(oa)
    assert orders[0] != orders[1] and sorted(orders[0]) == list(range(10))


def test_workers_draw_different_numpy_streams():
    loader = build_dataloader(dict(batch_size=1, num_workers=2, persistent_workers=True), train=False,
                              dataset=Indices())
    values = [m['np'] for b in loader for m in b.metas]
    # forked workers inherit the parent's numpy state: unseeded, both would draw the same numbers
    assert len(set(values)) == len(values)


class Resizes(Dataset):
    """Runs OpenCV's parallel resize in the worker, as the transforms do."""

    def __init__(self, image):
        self.image = image

    def __len__(self):
        return 4

    def __getitem__(self, i):
        cv2.resize(self.image, (900, 900))
        return {'inputs': torch.zeros(3, 2, 2), 'meta': {'idx': i, 'cv2_threads': cv2.getNumThreads()}}


def test_workers_forked_after_opencv_ran_its_pool_do_not_hang():
    # The parent runs OpenCV's thread pool, as the dataset tests and any main-process pipeline do; the workers
    # forked afterwards must neither touch the pool settings (cv2.setNumThreads in such a child deadlocks) nor
    # inherit a pool: setup_env turns it off in the parent first, as the trainer and tools/test.py do.
    image = np.random.default_rng(0).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        for _ in range(3):
            cv2.resize(image, (900, 900))
        setup_env(dict(num_threads=None))  # opencv_num_threads defaults to 0: no pool (getNumThreads says 1)
        assert cv2.getNumThreads() == 1
        loader = build_dataloader(dict(batch_size=1, num_workers=2), train=False, dataset=Resizes(image))
        loader.timeout = 60  # a hung worker raises "DataLoader timed out" instead of hanging the suite
        metas = [m for b in loader for m in b.metas]
        assert sorted(m['idx'] for m in metas) == [0, 1, 2, 3]
        assert {m['cv2_threads'] for m in metas} == {1}
    finally:
        cv2.setNumThreads(threads)


def test_evaluate_feeds_metrics_the_protocol_in_dataset_order(tmp_path):
    dataset = toy.ToyDataset(num_images=5, pipeline=toy.toy_pipeline(), test_mode=True)
    loader = build_dataloader(dict(batch_size=2), train=False, dataset=dataset)
    metric = toy.ToyMetric()
    model = toy.ToyDetector()
    result = evaluate(model, loader, [metric], torch.device('cpu'), keep_predictions=True)
    assert result.metrics['toy/num_images'] == 5
    assert [p[0] for p in result.predictions] == [0, 1, 2, 3, 4]
    idx, meta, pred = result.predictions[3]
    assert meta['ori_shape'] == (60, 80) and pred['boxes'].dtype == np.float32 and pred['labels'].dtype == np.int64
    # boxes are rescaled to the original 80 x 60 image
    assert pred['boxes'][:, 0::2].max() <= 80 and pred['boxes'][:, 1::2].max() <= 60
    assert model.training  # evaluate restores the mode it found


def test_an_empty_evaluation_dataset_is_an_error_naming_its_annotation_file(tmp_path):
    # a wrong split path used to evaluate to mAP 0.000 with exit code 0, as if the model were bad
    (tmp_path / 'ImageSets').mkdir()
    (tmp_path / 'ImageSets' / 'test.txt').write_text('')
    dataset = dict(type='VOCDataset', data_root=str(tmp_path), ann_file='ImageSets/test.txt', test_mode=True)
    loader_cfg = dict(batch_size=2, num_workers=0, dataset=dataset)
    with pytest.raises(ValueError, match=r'test_dataloader: the evaluation dataset has no images: '
                                         r'VOCDataset \(.*ImageSets/test\.txt\)'):
        build_dataloader(loader_cfg, train=False, name='test_dataloader')
    wrapped = dict(loader_cfg, dataset=dict(type='ConcatDataset', datasets=[dataset, dataset]))
    with pytest.raises(ValueError, match=r'VOCDataset \(.*test\.txt\), VOCDataset \(.*test\.txt\)'):
        build_dataloader(wrapped, train=False, name='val_dataloader')
