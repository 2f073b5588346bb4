"""Interrupt-and-resume ends with bit-identical weights to an uninterrupted run (CPU), with or without workers,
also after a ``kill -9`` in the middle of an epoch or while a checkpoint is being written."""
import os
import signal
import subprocess
import sys

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


def _loader(num_workers, persistent):
    return dict(batch_size=2, num_workers=num_workers, persistent_workers=persistent, shuffle=True,
                dataset=dict(type='ToyDataset', num_images=6, pipeline=toy.toy_pipeline(augment=True)))


# num_workers=0: the augmentations run in the main process; 2 persistent workers: they run in workers that live
# through the whole run, and the resumed run starts new ones. Both must end where the uninterrupted run ends.
@pytest.mark.parametrize('num_workers,persistent', [(0, False), (2, True)])
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, num_workers, persistent):
    loader = _loader(num_workers, persistent)
    full = Trainer.from_config(_cfg(tmp_path / 'full', train_dataloader=loader))
    full.train()
    expected = _state(full)

    # the same run, killed in the middle of the third epoch (after epoch_2.pth was written)
    broken = Trainer.from_config(_cfg(tmp_path / 'broken', train_dataloader=loader))
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
    resumed = Trainer.from_config(_cfg(tmp_path / 'broken', resume='auto', train_dataloader=loader))
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


def test_batches_do_not_depend_on_the_number_of_workers(tmp_path):
    """Each item's augmentation is seeded by (seed, epoch, index): 0, 1 or 2 workers train the same weights."""
    states = []
    for i, (num_workers, persistent) in enumerate([(0, False), (1, False), (2, True)]):
        trainer = Trainer.from_config(_cfg(tmp_path / str(i), train_dataloader=_loader(num_workers, persistent)))
        trainer.train()
        states.append(_state(trainer))
    for other in states[1:]:
        for k in states[0]:
            assert torch.equal(other[k], states[0][k]), k


def test_augmentations_differ_between_epochs_and_items(tmp_path):
    trainer = Trainer.from_config(_cfg(tmp_path, train_dataloader=_loader(0, False)))
    dataset = trainer.train_loader.dataset
    a, b, c = dataset[(0, 1)]['inputs'], dataset[(1, 1)]['inputs'], dataset[(0, 1)]['inputs']
    assert torch.equal(a, c) and not torch.equal(a, b)
    with pytest.raises(TypeError, match=r'\(epoch, index\)'):
        dataset[3]


def test_resume_from_an_explicit_path_and_a_finished_run(tmp_path):
    first = Trainer.from_config(_cfg(tmp_path, train_cfg=dict(max_epochs=1, val_interval=1)))
    first.train()
    again = Trainer.from_config(_cfg(tmp_path, train_cfg=dict(max_epochs=1, val_interval=1),
                         resume=str(tmp_path / 'epoch_1.pth')))
    assert again.epoch == 1
    again.train()  # nothing left to do
    assert again.iter == first.iter
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        Trainer.from_config(_cfg(tmp_path, resume=str(tmp_path / 'nope.pth')))


def test_resume_with_another_total_batch_size_is_refused_naming_both(tmp_path):
    # epoch 2 would start at iteration 3 of a run with 2 iterations per epoch: the epoch-based lr steps move
    Trainer.from_config(_cfg(tmp_path, train_cfg=dict(max_epochs=1, val_interval=1))).train()
    with pytest.raises(ValueError, match=r'total batch size of 2, this run has 3 .*1 process\(es\) x batch 3'):
        Trainer.from_config(_cfg(tmp_path, resume='auto', train_dataloader=dict(_loader(0, False), batch_size=3)))
    # the same batch size over a training set of another length moves the schedule too
    with pytest.raises(ValueError, match=r'1 epoch\(s\) in 3 iterations .* 4 per epoch'):
        Trainer.from_config(_cfg(tmp_path, resume='auto', train_dataloader=dict(
            _loader(0, False), dataset=dict(type='ToyDataset', num_images=8, pipeline=toy.toy_pipeline()))))


# A training process that kills itself with SIGKILL (no exception handler, no finally block, no atexit runs):
# mid_epoch at the second iteration of epoch 3, checkpoint_write half-way through writing epoch_4.pth (before the
# evaluation of epoch 4: the checkpoint is written first).
KILLED_RUN = """
import os, signal, sys
import torch
import detkit.engine.trainer as trainer_mod
from detkit.engine import Trainer
from test_resume import _cfg, _loader

kill_at, work_dir = sys.argv[1], sys.argv[2]
trainer = Trainer.from_config(_cfg(work_dir, train_dataloader=_loader(2, True)))
if kill_at == 'mid_epoch':
    step, calls = trainer.train_step, [0]

    def dying_step(batch, iter_in_epoch=0):
        calls[0] += 1
        if calls[0] == 2 * 3 + 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return step(batch, iter_in_epoch)

    trainer.train_step = dying_step
else:
    save = trainer_mod.save_checkpoint

    def dying_torch_save(obj, f):
        f.write(b'PK\\x03\\x04 half a zip')
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def save_checkpoint(ckpt, path):
        if os.path.basename(path) == 'epoch_4.pth':
            torch.save = dying_torch_save
        return save(ckpt, path)

    trainer_mod.save_checkpoint = save_checkpoint
trainer.train()
"""


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('full')
    trainer = Trainer.from_config(_cfg(work_dir, train_dataloader=_loader(2, True)))
    trainer.train()
    return work_dir, trainer


def _checkpoint_files(work_dir):
    return sorted(n for n in os.listdir(work_dir) if n.endswith(('.pth', '.tmp')))


@pytest.mark.parametrize('kill_at,resume_from', [('mid_epoch', 'epoch_2.pth'), ('checkpoint_write', 'epoch_3.pth')])
def test_kill_9_then_resume_equals_the_uninterrupted_run(tmp_path, uninterrupted, kill_at, resume_from):
    full_dir, full = uninterrupted
    engine_tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(engine_tests)), engine_tests,
                                                       os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, '-c', KILLED_RUN, kill_at, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    if kill_at == 'checkpoint_write':  # what the kill left: the temporary file of the interrupted write
        assert [n for n in os.listdir(tmp_path) if n.startswith('.epoch_4.pth.') and n.endswith('.tmp')]

    # the killed process's lock is gone with it; its leftovers are removed on resume
    resumed = Trainer.from_config(_cfg(tmp_path, resume='auto', train_dataloader=_loader(2, True)))
    assert resumed.resume_from.endswith(resume_from)
    resumed.train()
    expected, got = _state(full), _state(resumed)
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    assert resumed.iter == full.iter == 12 and resumed.best_score == full.best_score
    # the same checkpoint files as the uninterrupted run: no temporaries, exactly one best, the same one
    assert _checkpoint_files(tmp_path) == _checkpoint_files(full_dir)
    best = [n for n in _checkpoint_files(tmp_path) if n.startswith('best_')]
    assert len(best) == 1
    assert torch.equal(load_checkpoint(tmp_path / best[0])['state_dict']['cls_conv.weight'],
                       load_checkpoint(full_dir / best[0])['state_dict']['cls_conv.weight'])
