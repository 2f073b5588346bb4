"""Interrupt-and-resume ends with bit-identical weights to an uninterrupted run (CPU, num_workers=0)."""
import pytest
import toy
import torch

from detkit.engine import Trainer
from detkit.engine.checkpoint import load_checkpoint


def _cfg(work_dir, **overrides):
    # random augmentation (numpy + python RNG) and dropout (torch RNG): every RNG stream must be restored
    pipeline = toy.toy_pipeline(augment=True)
    kw = dict(
        model=dict(type='ToyDetector', num_classes=2, width=8, dropout=0.2),
        train_dataloader=dict(batch_size=2, num_workers=0, shuffle=True,
                              dataset=dict(type='ToyDataset', num_images=6, pipeline=pipeline)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
                         dict(type='MultiStepLR', by_epoch=True, milestones=[2], gamma=0.5)],
        train_cfg=dict(max_epochs=4, val_interval=2),
    )
    kw.update(overrides)
    return toy.toy_config(str(work_dir), **kw)


def _state(trainer):
    return {**{f'model.{k}': v.clone() for k, v in trainer.model.state_dict().items()},
            **{f'momentum.{i}': s['momentum_buffer'].clone()
               for i, s in enumerate(trainer.optim_wrapper.optimizer.state.values())}}


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    full = Trainer(_cfg(tmp_path / 'full'))
    full.train()
    expected = _state(full)

    # the same run, killed in the middle of the third epoch (after epoch_2.pth was written)
    broken = Trainer(_cfg(tmp_path / 'broken'))
    calls = {'n': 0}
    step = broken.train_step

    def dying_step(batch, iter_in_epoch=0):
        calls['n'] += 1
        if calls['n'] == 2 * 3 + 2:  # 3 iterations per epoch: second iteration of epoch 3
            raise KeyboardInterrupt
        return step(batch, iter_in_epoch)

    broken.train_step = dying_step
    with pytest.raises(KeyboardInterrupt):
        broken.train()

    # a fresh process would start here: mess up the global RNGs to prove they are restored
    torch.manual_seed(1234)
    resumed = Trainer(_cfg(tmp_path / 'broken', resume='auto'))
    assert resumed.resume_from.endswith('epoch_2.pth')
    assert (resumed.epoch, resumed.iter) == (2, 6)
    resumed.train()
    got = _state(resumed)
    assert resumed.iter == full.iter == 12
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    assert resumed.best_score == full.best_score
    # the last checkpoints agree too, scheduler position included
    a = load_checkpoint(tmp_path / 'full' / 'epoch_4.pth')
    b = load_checkpoint(tmp_path / 'broken' / 'epoch_4.pth')
    assert a['param_schedulers'] == b['param_schedulers'] and a['meta']['iter'] == b['meta']['iter'] == 12


def test_resume_from_an_explicit_path_and_a_finished_run(tmp_path):
    first = Trainer(_cfg(tmp_path, train_cfg=dict(max_epochs=1, val_interval=1)))
    first.train()
    again = Trainer(_cfg(tmp_path, train_cfg=dict(max_epochs=1, val_interval=1),
                         resume=str(tmp_path / 'epoch_1.pth')))
    assert again.epoch == 1
    again.train()  # nothing left to do
    assert again.iter == first.iter
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        Trainer(_cfg(tmp_path, resume=str(tmp_path / 'nope.pth')))
