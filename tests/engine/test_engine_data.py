"""Data loading: epoch-seeded shuffling, worker seeding, evaluation order."""
import cv2
import numpy as np
import pytest
import toy
import torch
from torch.utils.data import Dataset

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


def test_workers_draw_different_numpy_streams_and_leave_opencv_single_threaded():
    loader = build_dataloader(dict(batch_size=1, num_workers=2, persistent_workers=True), train=False,
                              dataset=Indices())
    metas = [m for b in loader for m in b.metas]
    values = [m['np'] for m in metas]
    # forked workers inherit the parent's numpy state: unseeded, both would draw the same numbers
    assert len(set(values)) == len(values)
    assert {m['cv2_threads'] for m in metas} == {1}  # worker_init_fn gave each worker one OpenCV thread


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
