"""One training run per work dir (a lock no crash leaves stuck) and no leftovers from interrupted runs."""
import fcntl
import glob
import os
import signal
import time

import pytest
import toy

from detkit.engine import Trainer
from detkit.engine.checkpoint import load_checkpoint, save_checkpoint
from detkit.engine.work_dir import LOCK_FILE, WorkDirBusyError, WorkDirLock, tidy_work_dir

def test_a_second_run_is_refused_naming_the_work_dir_and_process_and_a_killed_holder_frees_it(tmp_path):
    holder = toy.hold_work_dir(str(tmp_path))
    try:
        with pytest.raises(WorkDirBusyError) as err:
            Trainer.from_config(toy.toy_config(str(tmp_path)))
        assert str(tmp_path) in str(err.value) and f'pid {holder.pid}' in str(err.value)
        assert not glob.glob(str(tmp_path / '*.log'))  # refused before writing anything
    finally:
        holder.send_signal(signal.SIGKILL)  # as a crash would: no cleanup runs in the holder
        holder.wait()
    trainer = Trainer.from_config(toy.toy_config(str(tmp_path), train_cfg=dict(max_epochs=1)))
    trainer.train()
    assert os.path.isfile(tmp_path / 'epoch_1.pth')


def test_runs_in_one_process_and_sequential_runs_do_not_conflict_or_share_a_log(tmp_path):
    first = Trainer.from_config(toy.toy_config(str(tmp_path)))
    second = Trainer.from_config(toy.toy_config(str(tmp_path)))  # same process (a notebook, the tests): re-entrant
    assert first.timestamp != second.timestamp  # started within one second: still two logs
    first.close()
    second.close()
    with WorkDirLock(tmp_path):  # released by both
        pass


def test_forked_children_do_not_keep_the_lock(tmp_path):
    # data-loader workers are forked while the trainer holds the lock: they must not hold it after the parent
    lock = WorkDirLock(tmp_path).acquire()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child): fork's hooks have run when os.fork returns here
        os.write(ready_w, b'1')
        time.sleep(30)
        os._exit(0)
    try:
        assert os.read(ready_r, 1) == b'1'
        lock.release()
        fd = os.open(tmp_path / LOCK_FILE, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if the child still held it
        finally:
            os.close(fd)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(ready_w)


def test_tidy_removes_temporaries_and_only_the_resumed_runs_surplus_best(tmp_path):
    for n in ['.epoch_3.pth.k2j4_x.tmp', '.best_toy_mAP_epoch_3.pth.abc.tmp', 'notes.tmp', '.other.tmp',
              '20240101.log', 'best_toy_mAP_epoch_9.pth']:  # the last one is not even a checkpoint
        (tmp_path / n).write_bytes(b'x')
    for n, run in [('epoch_1.pth', 'r'), ('epoch_2.pth', 'r'), ('best_toy_mAP_epoch_1.pth', 'r'),
                   ('best_toy_mAP_epoch_2.pth', 'r'), ('best_toy_mAP_epoch_4.pth', 'other'),
                   ('best_toy_mAP_epoch_5.pth', None)]:
        save_checkpoint({'meta': {'run_id': run} if run else {}}, tmp_path / n)
    # a fresh run (no run of its own here yet): the temporaries only, never another run's best
    removed = tidy_work_dir(tmp_path, run_id='new')
    assert sorted(os.path.basename(p) for p in removed) == ['.best_toy_mAP_epoch_3.pth.abc.tmp',
                                                           '.epoch_3.pth.k2j4_x.tmp']
    # run r resumes: its best that its checkpoint names stays, its other best goes, the other runs' stay
    removed = tidy_work_dir(tmp_path, keep_best=str(tmp_path / 'best_toy_mAP_epoch_1.pth'), run_id='r')
    assert [os.path.basename(p) for p in removed] == ['best_toy_mAP_epoch_2.pth']
    assert sorted(os.listdir(tmp_path)) == sorted(['epoch_1.pth', 'epoch_2.pth', 'best_toy_mAP_epoch_1.pth',
                                                   'best_toy_mAP_epoch_4.pth', 'best_toy_mAP_epoch_5.pth',
                                                   'best_toy_mAP_epoch_9.pth', 'notes.tmp', '.other.tmp',
                                                   '20240101.log'])


def test_resume_removes_leftovers_and_keeps_the_valid_best(tmp_path):
    Trainer.from_config(toy.toy_config(str(tmp_path), train_cfg=dict(max_epochs=2, val_interval=1))).train()
    best = glob.glob(str(tmp_path / 'best_*.pth'))
    assert len(best) == 1
    meta = load_checkpoint(tmp_path / 'epoch_2.pth')['meta']
    assert meta['best_ckpt'] == best[0]
    # what a kill -9 while writing epoch 3 leaves, and one between writing a new best of epoch 3 and rewriting
    # epoch_3.pth to name it (here epoch_3.pth is not even written)
    (tmp_path / '.epoch_3.pth.q1w2e3.tmp').write_bytes(b'PK\x03\x04 half a zip')
    save_checkpoint({'meta': {'run_id': meta['run_id']}}, tmp_path / 'best_toy_mAP_epoch_3.pth')
    save_checkpoint({'meta': {'run_id': 'another run'}}, tmp_path / 'best_toy_mAP_epoch_7.pth')
    resumed = Trainer.from_config(toy.toy_config(str(tmp_path), resume='auto',
                                                 train_cfg=dict(max_epochs=2, val_interval=1)))
    resumed.close()
    assert not glob.glob(str(tmp_path / '*.tmp')) and not glob.glob(str(tmp_path / '.*.tmp'))
    assert sorted(glob.glob(str(tmp_path / 'best_*.pth'))) == sorted(
        best + [str(tmp_path / 'best_toy_mAP_epoch_7.pth')])  # another run's best stays
    assert load_checkpoint(best[0])['meta']['best_ckpt'] == best[0]  # the real one, not the stale file


def _lock_is_free(work_dir) -> bool:
    """Whether another open file description can take the work dir's lock (flock: even in this process)."""
    fd = os.open(work_dir / LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases the lock if this took it


def test_a_trainer_dropped_without_training_releases_the_work_dir(tmp_path):
    import gc
    trainer = Trainer.from_config(toy.toy_config(str(tmp_path)))
    assert not _lock_is_free(tmp_path)  # the trainer holds it from construction
    del trainer
    gc.collect()
    assert _lock_is_free(tmp_path)
