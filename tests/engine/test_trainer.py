"""Trainer behaviour: NaN stop, AMP on CPU, checkpoints kept and best, logs, dataset summary, evaluation; built
from objects or from a config."""
import glob
import json
import math
import os

import pytest
import toy
import torch

from detkit.engine import (LinearLR, MultiStepLR, NonFiniteLossError, OptimWrapper, Trainer, build_dataloader,
                           set_random_seed, sum_losses)
from detkit.engine.checkpoint import load_checkpoint, load_model_weights
from detkit.engine.evaluator import select_main_metric


def test_nan_loss_stops_with_iteration_and_term_and_keeps_last_checkpoint(tmp_path):
    # 4 iterations per epoch; the 7th loss call (epoch 2, iteration 3) is NaN in loss_bbox
    cfg = toy.toy_config(str(tmp_path), model=dict(type='ToyDetector', nan_after=6),
                         train_cfg=dict(max_epochs=3, val_interval=1))
    trainer = Trainer.from_config(cfg)
    with pytest.raises(NonFiniteLossError) as err:
        trainer.train()
    msg = str(err.value)
    assert 'epoch 2, iteration 3/4' in msg and 'global iteration 7' in msg
    assert 'loss_bbox=nan' in msg and 'loss_cls=' in msg
    assert str(tmp_path / 'epoch_1.pth') in msg
    assert not os.path.exists(tmp_path / 'epoch_2.pth')
    ckpt = load_checkpoint(tmp_path / 'epoch_1.pth')
    assert ckpt['meta']['epoch'] == 1 and ckpt['meta']['iter'] == 4
    assert all(torch.isfinite(v).all() for v in ckpt['state_dict'].values() if v.is_floating_point())
    # the weights in memory were not updated with the NaN step either
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    net = toy.ToyDetector()
    load_model_weights(net, tmp_path / 'epoch_1.pth')


def test_nan_weights_are_never_written(tmp_path):
    trainer = Trainer.from_config(toy.toy_config(str(tmp_path), train_cfg=dict(max_epochs=1)))
    with torch.no_grad():
        trainer.model.cls_conv.bias[0] = float('inf')
    trainer.epoch = 1
    with pytest.raises(NonFiniteLossError, match='cls_conv.bias'):
        trainer.save_checkpoint()
    assert not glob.glob(str(tmp_path / '*.pth'))
    trainer.log.close()


def test_bf16_amp_step_on_cpu(tmp_path):
    cfg = toy.toy_config(str(tmp_path))
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    trainer = Trainer.from_config(cfg)
    assert trainer.optim_wrapper.dtype == torch.bfloat16 and trainer.optim_wrapper.scaler is None
    seen = []
    trainer.model.cls_conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.lr_scheduler.step(0)
    values = trainer.train_step(next(iter(trainer.train_loader)))
    assert seen == [torch.bfloat16]
    assert math.isfinite(values['loss']) and values['loss'] > 0
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay fp32
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    trainer.log.close()


def test_checkpoints_best_logs_and_summary(tmp_path):
    toy.ToyDataset.summary_calls = 0
    cfg = toy.toy_config(str(tmp_path), train_cfg=dict(max_epochs=3, val_interval=2),
                         default_hooks=dict(logger=dict(interval=3, tensorboard=True),
                                            checkpoint=dict(interval=1, max_keep_ckpts=1, save_best='auto')))
    trainer = Trainer.from_config(cfg)
    metrics = trainer.train()
    assert set(metrics) == {'toy/mAP', 'toy/num_images'} and metrics['toy/num_images'] == 4
    names = sorted(os.listdir(tmp_path))
    epoch_ckpts = [n for n in names if n.startswith('epoch_')]
    best = [n for n in names if n.startswith('best_')]
    assert epoch_ckpts == ['epoch_3.pth']                      # max_keep_ckpts=1
    assert len(best) == 1 and best[0].startswith('best_toy_mAP_epoch_')
    meta = load_checkpoint(tmp_path / 'epoch_3.pth')['meta']
    assert meta['dataset_meta'] == {'classes': toy.CLASSES} and meta['best_key'] == 'toy/mAP'
    assert 'ToyDetector' in meta['config']
    assert glob.glob(str(tmp_path / 'tf_logs' / 'events.out.tfevents.*'))
    assert toy.ToyDataset.summary_calls == 3                    # once per epoch

    log = [json.loads(line) for line in open(glob.glob(str(tmp_path / '*.log.json'))[0])]
    train = [r for r in log if r['mode'] == 'train']
    val = [r for r in log if r['mode'] == 'val']
    # interval 3 over 4 iterations: lines at iterations 3 and 4 of each epoch
    assert [(r['epoch'], r['iter'], r['step']) for r in train] == [(1, 3, 3), (1, 4, 4), (2, 3, 7), (2, 4, 8),
                                                                   (3, 3, 11), (3, 4, 12)]
    assert {'lr', 'loss', 'loss_cls', 'loss_bbox', 'time', 'data_time', 'grad_norm'} <= set(train[0])
    assert abs(train[0]['loss'] - train[0]['loss_cls'] - train[0]['loss_bbox']) < 1e-5
    assert [r['epoch'] for r in val] == [2, 3] and 'toy/mAP' in val[0]   # every 2 epochs and the last one


def test_sum_losses_accepts_lists_and_rejects_other_values():
    total, terms = sum_losses({'loss_cls': torch.tensor(1.0), 'loss_bbox': [torch.tensor(0.5), torch.tensor(0.25)]})
    assert total.item() == 1.75 and terms['loss_bbox'].item() == 0.75
    with pytest.raises(TypeError, match='loss_x'):
        sum_losses({'loss_x': 3.0})


def test_select_main_metric():
    assert select_main_metric({'voc/AP50': 1, 'voc/mAP': 2}) == 'voc/mAP'
    assert select_main_metric({'voc/mAP': 1, 'coco/bbox_mAP': 2}) == 'coco/bbox_mAP'
    assert select_main_metric({'x/recall': 1, 'x/mAP': 2}) == 'x/mAP'
    assert select_main_metric({'x/recall': 1}) == 'x/recall'
    with pytest.raises(KeyError, match='voc/mAP'):
        select_main_metric({'x/recall': 1}, 'voc/mAP')


def test_missing_config_keys_are_named(tmp_path):
    cfg = toy.toy_config(str(tmp_path), train_cfg=dict(val_interval=1))
    with pytest.raises(KeyError, match='max_epochs'):
        Trainer.from_config(cfg)
    cfg = toy.toy_config(str(tmp_path))
    cfg.train_dataloader.batch_sizes = 3
    with pytest.raises(KeyError, match='batch_sizes'):
        Trainer.from_config(cfg)


def _toy_objects(cfg, seed=0):
    """What Trainer.from_config builds for the toy config, built by hand."""
    set_random_seed(seed)  # from_config seeds before building the model: the same initial weights
    model = toy.ToyDetector(num_classes=2, width=8)
    train_loader = build_dataloader(cfg.train_dataloader, train=True, seed=seed)
    val_loader = build_dataloader(cfg.val_dataloader, train=False)
    return model, train_loader, val_loader


def test_a_trainer_of_built_objects_trains_exactly_like_from_config(tmp_path):
    cfg = toy.toy_config(str(tmp_path / 'config'), train_cfg=dict(max_epochs=3, val_interval=1))
    by_config = Trainer.from_config(cfg)
    by_config.train()

    model, train_loader, val_loader = _toy_objects(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    trainer = Trainer(model=model, work_dir=tmp_path / 'objects', train_dataloader=train_loader,
                      optim_wrapper=OptimWrapper(optimizer, clip_grad=dict(max_norm=10.0)), max_epochs=3,
                      param_scheduler=[LinearLR(start_factor=0.1, by_epoch=False, begin=0, end=4),
                                       MultiStepLR(milestones=[2], gamma=0.1, begin=0, end=4)],
                      val_dataloader=val_loader, evaluator=[toy.ToyMetric()], seed=0, device='cpu',
                      log_interval=2, tensorboard=False)
    metrics = trainer.train()
    assert metrics == by_config.last_metrics and (trainer.epoch, trainer.iter) == (3, 12)
    expected = by_config.model.state_dict()
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert sorted(n for n in os.listdir(tmp_path / 'objects') if n.endswith('.pth')) == \
        sorted(n for n in os.listdir(tmp_path / 'config') if n.endswith('.pth'))
    # the checkpoints resume like any: a from_config run continues the objects' run
    resumed = Trainer.from_config(toy.toy_config(str(tmp_path / 'objects'), resume='auto',
                                                 train_cfg=dict(max_epochs=3, val_interval=1)))
    assert (resumed.epoch, resumed.iter) == (3, 12)
    resumed.close()


def test_a_plain_optimizer_without_schedules_and_the_seed_the_loader_was_built_with(tmp_path):
    cfg = toy.toy_config(str(tmp_path))
    model, train_loader, _ = _toy_objects(cfg)
    trainer = Trainer(model=model, work_dir=tmp_path, train_dataloader=train_loader,
                      optim_wrapper=torch.optim.SGD(model.parameters(), lr=0.01), max_epochs=1, device='cpu',
                      tensorboard=False)
    trainer.train()
    assert trainer.optim_wrapper.param_groups[0]['lr'] == 0.01 and trainer.iter == 4  # constant lr, no evaluation
    assert trainer.val_loader is None and os.path.isfile(tmp_path / 'epoch_1.pth')
    with pytest.raises(ValueError, match=r'train_dataloader was built with seed 0, the run has seed 3'):
        Trainer(model=model, work_dir=tmp_path / 'other', train_dataloader=train_loader,
                optim_wrapper=torch.optim.SGD(model.parameters(), lr=0.01), max_epochs=1, seed=3)
    with pytest.raises(TypeError):
        Trainer(cfg)  # keyword arguments only; a config goes through Trainer.from_config
