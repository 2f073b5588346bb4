"""Several runs in one work dir: each run touches only its own checkpoints, ``resume=auto`` continues the most
recent run, and a run that would replace another run's files is refused; the checkpoint comes before the
evaluation; the classes of a checkpoint, the model and the dataset must agree."""
import hashlib
import importlib.util
import os

import pytest
import toy
import torch
from mmengine.evaluator import BaseMetric

from detkit.engine import Trainer
from detkit.engine.checkpoint import check_checkpoint_classes, load_checkpoint, save_checkpoint
from detkit.engine.trainer import check_num_classes
from detkit.engine.work_dir import LOCK_FILE, WorkDirError
from detkit.registry import DATASETS, METRICS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@DATASETS.register_module(force=True)
class ToySwappedDataset(toy.ToyDataset):
    """The toy dataset with its two class names in the other order."""

    METAINFO = {'classes': tuple(reversed(toy.CLASSES))}


@METRICS.register_module(force=True)
class ToyFailingMetric(BaseMetric):
    """A metric whose computation raises (as VOCMetric does on labels beyond the dataset's classes)."""

    def process(self, data_batch, data_samples):
        self.results.append(len(data_samples))

    def compute_metrics(self, results):
        raise IndexError('label 5 is out of range for 2 classes')


def _cfg(work_dir, max_epochs, max_keep=-1, **overrides):
    kw = dict(train_cfg=dict(max_epochs=max_epochs, val_interval=1),
              default_hooks=dict(logger=dict(interval=4, tensorboard=False),
                                 checkpoint=dict(interval=1, max_keep_ckpts=max_keep, save_best='auto')))
    kw.update(overrides)
    return toy.toy_config(str(work_dir), **kw)


def _files(work_dir):
    """name -> sha1 of every file in the work dir but the lock file (it holds the last holder's details)."""
    return {n: hashlib.sha1((work_dir / n).read_bytes()).hexdigest() for n in os.listdir(work_dir)
            if (work_dir / n).is_file() and n != LOCK_FILE}


def _run_id(path):
    return load_checkpoint(path)['meta']['run_id']


def test_a_new_run_that_would_replace_another_runs_checkpoints_is_refused_and_deletes_nothing(tmp_path):
    one_eval = dict(max_epochs=4, val_interval=4)
    Trainer.from_config(_cfg(tmp_path, 4, max_keep=2, train_cfg=one_eval)).train()
    before = _files(tmp_path)
    assert {'epoch_3.pth', 'epoch_4.pth', 'best_toy_mAP_epoch_4.pth'} <= set(before) and 'epoch_1.pth' not in before
    with pytest.raises(WorkDirError) as err:
        Trainer.from_config(_cfg(tmp_path, 4, max_keep=2, train_cfg=one_eval))
    msg = str(err.value)
    assert str(tmp_path) in msg and 'best_toy_mAP_epoch_4.pth, epoch_3.pth, epoch_4.pth.' in msg
    assert '--resume auto' in msg and '--work-dir' in msg
    assert _files(tmp_path) == before  # nothing deleted, replaced, or even a log written


def test_rotation_and_resume_auto_keep_to_their_own_run(tmp_path):
    # run A leaves epoch_3/4.pth (no best: save_best=None); run B then trains 1 epoch, max_keep_ckpts=1
    Trainer.from_config(_cfg(tmp_path, 4, max_keep=2, train_cfg=dict(max_epochs=4, val_interval=0))).train()
    a_files = {n: h for n, h in _files(tmp_path).items() if n.endswith('.pth')}
    assert sorted(a_files) == ['epoch_3.pth', 'epoch_4.pth']
    run_a = _run_id(tmp_path / 'epoch_4.pth')
    b_cfg = dict(max_keep=1, train_cfg=dict(max_epochs=1, val_interval=0))
    Trainer.from_config(_cfg(tmp_path, 1, **b_cfg)).train()
    run_b = _run_id(tmp_path / 'epoch_1.pth')
    assert run_b != run_a
    # B resumes (auto): its own epoch_1.pth, not A's epoch_4.pth with the highest number
    b_cfg['train_cfg'] = dict(max_epochs=2, val_interval=0)
    resumed = Trainer.from_config(_cfg(tmp_path, 2, resume='auto', **b_cfg))
    assert resumed.resume_from == str(tmp_path / 'epoch_1.pth') and resumed.epoch == 1 and resumed.run_id == run_b
    resumed.train()
    # its rotation removed its own epoch_1.pth and none of A's files
    files = _files(tmp_path)
    assert sorted(n for n in files if n.endswith('.pth')) == ['epoch_2.pth', 'epoch_3.pth', 'epoch_4.pth']
    assert all(files[n] == h for n, h in a_files.items())
    assert _run_id(tmp_path / 'epoch_2.pth') == run_b
    # going on to epoch 3 would replace A's epoch_3.pth: refused, naming it
    b_cfg['train_cfg'] = dict(max_epochs=3, val_interval=0)
    with pytest.raises(WorkDirError, match=r'would overwrite: epoch_3\.pth\.'):
        Trainer.from_config(_cfg(tmp_path, 3, resume='auto', **b_cfg))
    assert all(_files(tmp_path)[n] == h for n, h in a_files.items())


def test_a_failing_metric_keeps_the_epochs_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, 2, val_evaluator=dict(type='ToyFailingMetric'))
    trainer = Trainer.from_config(cfg)
    with pytest.raises(IndexError, match='out of range'):
        trainer.train()
    meta = load_checkpoint(tmp_path / 'epoch_1.pth')['meta']
    assert meta['epoch'] == 1 and meta['iter'] == 4 and meta['best_ckpt'] is None


def test_the_epoch_checkpoint_names_the_best_written_after_the_evaluation(tmp_path, monkeypatch):
    # a metric that improves every epoch: each epoch is a new best
    scores = iter([0.25, 0.5])
    monkeypatch.setattr(toy.ToyMetric, 'compute_metrics', lambda self, results: {'mAP': next(scores)})
    Trainer.from_config(_cfg(tmp_path, 2)).train()
    best = sorted(n for n in os.listdir(tmp_path) if n.startswith('best_'))
    assert best == ['best_toy_mAP_epoch_2.pth']  # the epoch-1 best of this run was replaced
    for name in ('epoch_2.pth', best[0]):
        meta = load_checkpoint(tmp_path / name)['meta']
        assert meta['best_ckpt'] == str(tmp_path / best[0]) and meta['best_score'] == 0.5 and meta['epoch'] == 2
    assert torch.equal(load_checkpoint(tmp_path / 'epoch_2.pth')['state_dict']['cls_conv.weight'],
                       load_checkpoint(tmp_path / best[0])['state_dict']['cls_conv.weight'])
    assert load_checkpoint(tmp_path / 'epoch_1.pth')['meta']['best_ckpt'] == str(tmp_path / 'best_toy_mAP_epoch_1.pth')


def test_num_classes_that_is_not_the_datasets_is_refused_before_training(tmp_path):
    cfg = _cfg(tmp_path, 1, model=dict(type='ToyDetector', num_classes=6, width=8))
    with pytest.raises(ValueError, match=r"model.num_classes is 6, but the training set has 2 classes "
                                         r"\['red_box', 'green_box'\]: set model.num_classes=2"):
        Trainer.from_config(cfg)
    assert not [n for n in os.listdir(tmp_path) if n.endswith('.pth')]


def test_check_num_classes_reads_the_heads_foreground_count():
    model = torch.nn.Module()
    model.bbox_head = torch.nn.Module()
    model.bbox_head.num_classes = 4
    check_num_classes(model, ('circle', 'square', 'triangle', 'star'), 'test set')  # SSD: background not counted
    with pytest.raises(ValueError, match=r'model.bbox_head.num_classes is 4, but the test set has 5 classes'):
        check_num_classes(model, ('a', 'b', 'c', 'd', 'e'), 'test set')


def test_resume_with_reordered_classes_is_refused_naming_both_lists(tmp_path):
    Trainer.from_config(_cfg(tmp_path, 1, train_cfg=dict(max_epochs=1, val_interval=0))).train()
    swapped = dict(batch_size=2, num_workers=0, shuffle=True,
                   dataset=dict(type='ToySwappedDataset', num_images=8, pipeline=toy.toy_pipeline()))
    with pytest.raises(ValueError) as err:
        Trainer.from_config(_cfg(tmp_path, 2, resume='auto', train_dataloader=swapped))
    msg = str(err.value)
    assert "['red_box', 'green_box']" in msg and "['green_box', 'red_box']" in msg
    assert 'epoch_1.pth' in msg and 'load_from' in msg


def test_check_checkpoint_classes_ignores_weights_without_classes():
    check_checkpoint_classes({}, ('a', 'b'), 'w.pth', 'test')
    check_checkpoint_classes({'dataset_meta': {}}, ('a', 'b'), 'w.pth', 'test')
    check_checkpoint_classes({'dataset_meta': {'classes': ('a', 'b')}}, ('a', 'b'), 'w.pth', 'test')
    with pytest.raises(ValueError, match=r"cannot test w.pth: it was trained on the classes \['a', 'b'\], the "
                                         r"dataset has \['a', 'c'\]"):
        check_checkpoint_classes({'dataset_meta': {'classes': ('a', 'b')}}, ('a', 'c'), 'w.pth', 'test')


def _tool(name):
    spec = importlib.util.spec_from_file_location(f'{name}_tool', os.path.join(ROOT, 'tools', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tools_test_refuses_a_checkpoint_of_other_classes_and_accepts_one_without(tmp_path, capsys):
    cfg = toy.write_toy_config(str(tmp_path / 'toy_cfg.py'), str(tmp_path / 'w'))
    model = toy.ToyDetector(num_classes=2, width=8)
    swapped = tmp_path / 'swapped.pth'
    save_checkpoint({'state_dict': model.state_dict(),
                     'meta': {'dataset_meta': {'classes': tuple(reversed(toy.CLASSES))}}}, swapped)
    test_tool = _tool('test')
    with pytest.raises(SystemExit) as err:
        test_tool.main([cfg, str(swapped), '--device', 'cpu'])
    msg = str(err.value)
    assert msg.startswith('error: cannot test') and str(swapped) in msg
    assert "['green_box', 'red_box']" in msg and "['red_box', 'green_box']" in msg and 'load_from' in msg
    bare = tmp_path / 'bare.pth'
    save_checkpoint({'state_dict': model.state_dict()}, bare)  # converted weights: no classes to compare
    metrics = test_tool.main([cfg, str(bare), '--device', 'cpu'])
    assert metrics['toy/num_images'] == 4


def test_files_in_the_work_dir_are_not_written_through_symbolic_links(tmp_path):
    victim = tmp_path / 'victim.txt'
    victim.write_text('precious')
    cfg = toy.write_toy_config(str(tmp_path / 'toy_cfg.py'), str(tmp_path / 'w'))
    train_tool = _tool('train')
    work = tmp_path / 'w'
    work.mkdir()
    os.symlink(victim, work / '.detkit.lock')
    with pytest.raises(SystemExit) as err:
        train_tool.main([cfg, '--work-dir', str(work)])
    assert str(work / '.detkit.lock') in str(err.value) and 'symbolic link' in str(err.value)
    with pytest.raises(WorkDirError, match=r'\.detkit\.lock is a symbolic link'):  # the trainer alone too
        Trainer.from_config(toy.toy_config(str(work)))
    os.remove(work / '.detkit.lock')
    os.symlink(victim, work / 'toy_cfg.py')  # where train.py dumps the config
    with pytest.raises(SystemExit) as err:
        train_tool.main([cfg, '--work-dir', str(work)])
    assert str(work / 'toy_cfg.py') in str(err.value) and 'symbolic link' in str(err.value)
    assert victim.read_text() == 'precious'
    assert not [n for n in os.listdir(work) if n.endswith(('.pth', '.log'))]


def test_logs_are_not_written_through_symbolic_links(tmp_path):
    from detkit.engine.logger import TrainLogger
    victim = tmp_path / 'victim.txt'
    victim.write_text('precious')
    os.symlink(victim, tmp_path / 'ts.log')
    with pytest.raises(WorkDirError, match='ts.log is a symbolic link'):
        TrainLogger(str(tmp_path), 'ts', tensorboard=False)
    os.symlink(victim, tmp_path / 'ts2.log.json')
    log = TrainLogger(str(tmp_path), 'ts2', tensorboard=False)
    with pytest.raises(WorkDirError, match='ts2.log.json is a symbolic link'):
        log.log_val(epoch=1, step=1, metrics={'toy/mAP': 0.5})
    os.symlink(tmp_path, tmp_path / 'tf_logs')
    with pytest.raises(WorkDirError, match='tf_logs is a symbolic link'):
        TrainLogger(str(tmp_path), 'ts3', tensorboard=True)
    assert victim.read_text() == 'precious'


def test_a_checkpoint_written_over_a_link_replaces_the_link_not_its_target(tmp_path):
    victim = tmp_path / 'victim.txt'
    victim.write_text('precious')
    os.symlink(victim, tmp_path / 'epoch_1.pth')
    save_checkpoint({'v': torch.tensor(1)}, tmp_path / 'epoch_1.pth')
    assert victim.read_text() == 'precious'
    assert not os.path.islink(tmp_path / 'epoch_1.pth') and load_checkpoint(tmp_path / 'epoch_1.pth')['v'] == 1


def test_train_tool_with_a_work_dir_that_cannot_be_created_says_so_in_one_line(tmp_path):
    (tmp_path / 'file').write_text('a regular file')
    cfg = toy.write_toy_config(str(tmp_path / 'toy_cfg.py'), str(tmp_path / 'w'))
    with pytest.raises(SystemExit) as err:
        _tool('train').main([cfg, '--work-dir', str(tmp_path / 'file' / 'w')])
    msg = str(err.value)
    assert msg.startswith(f'error: cannot create the work dir {tmp_path / "file" / "w"}: Not a directory')
    assert '\n' not in msg
