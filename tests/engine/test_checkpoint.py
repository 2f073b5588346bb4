"""Checkpoints: atomic writes, weights_only reads with clear errors, latest-checkpoint lookup."""
import logging
import os

import numpy as np
import pytest
import torch

from detkit.engine import checkpoint as ckpt_mod
from detkit.engine.checkpoint import (CheckpointError, find_latest_checkpoint, load_checkpoint, load_model_weights,
                                      save_checkpoint, to_checkpoint_safe)


def test_round_trip_and_no_temporary_files_left(tmp_path):
    path = tmp_path / 'epoch_1.pth'
    data = {'meta': {'epoch': 1, 'classes': ('a', 'b'), 'best': None}, 'state_dict': {'w': torch.arange(4.0)}}
    save_checkpoint(data, path)
    loaded = load_checkpoint(path)
    assert loaded['meta'] == data['meta'] and torch.equal(loaded['state_dict']['w'], data['state_dict']['w'])
    assert os.listdir(tmp_path) == ['epoch_1.pth']


def test_values_weights_only_cannot_read_are_refused_by_key(tmp_path):
    with pytest.raises(TypeError, match=r"\['meta'\]\['mean'\].*ndarray"):
        save_checkpoint({'meta': {'mean': np.zeros(3)}}, tmp_path / 'x.pth')
    assert not os.listdir(tmp_path)
    assert to_checkpoint_safe({'classes': ('a',), 'mean': np.float32(0.5), 'fn': print}) == \
        {'classes': ('a',), 'mean': 0.5}


def test_a_crash_while_writing_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / 'epoch_1.pth'
    save_checkpoint({'v': torch.tensor(1)}, path)

    def half_write(obj, f):
        f.write(b'PK\x03\x04 half a zip')
        raise OSError('No space left on device')

    monkeypatch.setattr(ckpt_mod.torch, 'save', half_write)
    with pytest.raises(OSError, match='No space'):
        save_checkpoint({'v': torch.tensor(2)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)['v'].item() == 1
    assert os.listdir(tmp_path) == ['epoch_1.pth']


def test_truncated_checkpoint_error_names_the_file(tmp_path):
    good = tmp_path / 'epoch_2.pth'
    save_checkpoint({'state_dict': {'w': torch.randn(1000)}}, good)
    bad = tmp_path / 'epoch_3.pth'
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r'epoch_3\.pth.*truncated or corrupt'):
        load_checkpoint(bad)
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(b'not a checkpoint at all')
    with pytest.raises(CheckpointError, match='junk.pth'):
        load_checkpoint(junk)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_checkpoint(tmp_path / 'missing.pth')


def test_pickled_objects_are_not_loaded(tmp_path):
    path = tmp_path / 'foreign.pth'

    class Foreign:  # noqa: B903
        pass

    torch.save({'obj': {1, 2}, 'cls': Foreign.__name__, 'x': np.zeros(2)}, path)
    with pytest.raises(CheckpointError, match='pickled Python objects'):
        load_checkpoint(path)


def test_find_latest_checkpoint_picks_the_latest_of_the_most_recent_run(tmp_path):
    assert find_latest_checkpoint(tmp_path) is None

    def ckpt(name, **meta):
        save_checkpoint({'meta': meta}, tmp_path / name)

    # files of older detkit versions (no run): by iteration, not by the number in the name
    ckpt('epoch_10.pth', iter=30)
    ckpt('epoch_9.pth', iter=40)
    (tmp_path / 'epoch_12.pth').write_bytes(b'')  # not a checkpoint: skipped
    for name in ('best_voc_mAP_epoch_11.pth', 'epoch_x.pth'):
        ckpt(name, iter=99)
    assert find_latest_checkpoint(tmp_path) == str(tmp_path / 'epoch_9.pth')
    # an older run A (4 epochs) and a newer run B (2 so far): B's latest, though A's numbers are higher
    ckpt('epoch_3.pth', run_id='a', run_start=1000.0, iter=30)
    ckpt('epoch_4.pth', run_id='a', run_start=1000.0, iter=40)
    ckpt('epoch_1.pth', run_id='b', run_start=2000.0, iter=10)
    ckpt('epoch_2.pth', run_id='b', run_start=2000.0, iter=20)
    assert find_latest_checkpoint(tmp_path) == str(tmp_path / 'epoch_2.pth')
    os.remove(tmp_path / 'epoch_2.pth')
    assert find_latest_checkpoint(tmp_path) == str(tmp_path / 'epoch_1.pth')


def test_load_model_weights_strips_ddp_prefix_and_returns_meta(tmp_path):
    net = torch.nn.Linear(2, 2)
    state = {f'module.{k}': v + 1 for k, v in net.state_dict().items()}
    save_checkpoint({'state_dict': state, 'meta': {'dataset_meta': {'classes': ('x',)}}}, tmp_path / 'w.pth')
    meta = load_model_weights(net, tmp_path / 'w.pth')
    assert meta['dataset_meta']['classes'] == ('x',)
    assert torch.equal(net.weight, state['module.weight'])


def test_partial_loading_reports_what_did_not_match(tmp_path, caplog, monkeypatch):
    save_checkpoint({'state_dict': {'weight': torch.zeros(2, 2), 'extra.bias': torch.zeros(1)}}, tmp_path / 'p.pth')
    net = torch.nn.Linear(2, 2)
    monkeypatch.setattr(logging.getLogger('detkit'), 'propagate', True)  # let caplog see it
    with caplog.at_level(logging.WARNING, logger='detkit'):
        load_model_weights(net, tmp_path / 'p.pth', strict=False)
    assert "['bias']" in caplog.text and "['extra.bias']" in caplog.text and 'p.pth' in caplog.text
    assert net.weight.abs().sum() == 0


class ForeignObject:
    """A class pickled into a checkpoint (module level: torch.save cannot pickle a local class)."""


def test_random_bytes_are_corrupt_not_pickled_objects_and_weights_only_is_never_advised(tmp_path):
    junk = tmp_path / 'random.pth'
    junk.write_bytes(np.random.RandomState(0).bytes(5000))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(junk)
    msg = str(err.value)
    assert 'random.pth' in msg and 'truncated or corrupt' in msg
    assert 'pickled' not in msg and 'weights_only' not in msg

    torch.save({'obj': ForeignObject()}, tmp_path / 'foreign.pth')
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / 'foreign.pth')
    assert 'pickled Python objects' in str(err.value) and 'ForeignObject' in str(err.value)
    assert 'weights_only' not in str(err.value)


@pytest.mark.parametrize('umask,mode', [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_checkpoints_get_the_mode_the_umask_allows(tmp_path, umask, mode):
    # mkstemp creates 0600 files whatever the umask: another user or container could not read the checkpoint
    old = os.umask(umask)
    try:
        save_checkpoint({'v': torch.tensor(1)}, tmp_path / 'epoch_1.pth')
        save_checkpoint({'v': torch.tensor(2)}, tmp_path / 'epoch_1.pth')  # replacing keeps the same rule
    finally:
        os.umask(old)
    assert os.stat(tmp_path / 'epoch_1.pth').st_mode & 0o777 == mode
