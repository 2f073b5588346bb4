"""Reading checkpoints safely and loading their weights: pickled code, another architecture, another class count."""
import importlib.util
import logging
import os
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from torch import nn

from detkit.models.utils.weights import load_weight_file
from detkit.registry import MODELS
from detkit.utils.checkpoint_io import CheckpointError, load_checkpoint, load_model_weights

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS / 'engine') not in sys.path:  # the toy detector and dataset (as tests/engine/conftest.py does)
    sys.path.insert(0, str(TESTS / 'engine'))


def _tiny_ssd_cfg(num_classes: int) -> dict:
    """tests/models/detectors/tiny_ssd.py's SSD (1/8-width VGG on 64x64 inputs)."""
    spec = importlib.util.spec_from_file_location('tiny_ssd', TESTS / 'models' / 'detectors' / 'tiny_ssd.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tiny_ssd_cfg(num_classes=num_classes)


@pytest.fixture
def detkit_logs(caplog, monkeypatch):
    """caplog seeing the 'detkit' logger's warnings."""
    monkeypatch.setattr(logging.getLogger('detkit'), 'propagate', True)
    caplog.set_level(logging.INFO, logger='detkit')
    return caplog


# ------------------------------------------------------------------ item 15: a pickle that calls os.system
class RunsAShellCommand:
    """Unpickling an instance calls ``os.system(command)`` (what a malicious checkpoint does)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class PlainObject:
    """A class of the test module: torch's other wording ('Unsupported global ... not an allowed global')."""


@pytest.mark.parametrize('payload, name', [('os.system', 'system'), ('class', 'PlainObject')])
def test_a_pickled_payload_is_named_as_such_and_never_runs(tmp_path, payload, name):
    marker = tmp_path / 'payload_ran'
    obj = RunsAShellCommand(f'touch {marker}') if payload == 'os.system' else PlainObject()
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(1)}, 'meta': {'x': obj}}, path)
    for read in (load_checkpoint, load_weight_file):  # checkpoints and pretrained= files
        with pytest.raises(CheckpointError) as err:
            read(path)
        msg = str(err.value)
        assert str(path) in msg and 'holds pickled Python objects' in msg and name in msg, msg
        assert 'truncated' not in msg and 'corrupt' not in msg and 'weights_only' not in msg
        assert not marker.exists()
    if payload == 'os.system':  # the file is a real payload: unpickling it unsafely runs the command
        torch.load(path, weights_only=False)
        assert marker.exists()


# --------------------------------------------------------------- item 16: a checkpoint of another architecture
def _trained_cfg(head: str, work_dir: str) -> str:
    """The config text the trainer stores in meta['config']."""
    return Config(dict(model=dict(type='SingleStageDetector', backbone=dict(type='ResNet', depth=18),
                                  neck=dict(type='FPN'), bbox_head=dict(type=head, num_classes=4)),
                       work_dir=work_dir)).pretty_text


def test_strict_loading_of_another_architecture_is_one_error_naming_both_configs(tmp_path):
    theirs = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1))  # keys 0.*, 1.*
    ours = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 8, 1))  # 0.*, 1.* (bn), 2.*
    path = tmp_path / 'epoch_12.pth'
    torch.save({'state_dict': theirs.state_dict(),
                'meta': {'config': _trained_cfg('RetinaHead', 'work_dirs/retinanet_shapes')}}, path)
    given = Config(dict(model=dict(type='SingleStageDetector', backbone=dict(type='SSDVGG'),
                                   bbox_head=dict(type='SSDHead'))))
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_model_weights(ours, path, strict=True, config=given)
    msg = str(err.value)
    assert '\n' not in msg and 'Error(s) in loading state_dict' not in msg
    assert str(path) in msg
    assert 'work_dirs/retinanet_shapes' in msg and 'RetinaHead' in msg  # the config it was trained with
    assert 'SSDVGG' in msg and 'SSDHead' in msg  # the config given
    # 1.* of the model is a batch norm: 1.running_mean, 1.running_var, 1.num_batches_tracked are not in the file,
    # nor 2.*; the file's 1.weight (a conv) has another shape than the batch norm's weight
    missing = sorted(set(ours.state_dict()) - set(theirs.state_dict()))
    assert f'missing from the checkpoint: {len(missing)} of {len(ours.state_dict())} model weights' in msg
    assert "'2.weight'" in msg and 'shape differs: 1 weight (1.weight: checkpoint (4, 4, 1, 1), model (4,))' in msg
    for k, v in ours.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k])


def test_strict_loading_without_a_stored_config_says_so(tmp_path):
    path = tmp_path / 'bare.pth'
    torch.save(nn.Linear(2, 3).state_dict(), path)
    with pytest.raises(CheckpointError, match=r'bare\.pth.*stores no config.*shape differs: 2 weights'):
        load_model_weights(nn.Linear(2, 4), path, strict=True)


def test_resume_from_a_checkpoint_of_another_model_names_it_and_both_configs(tmp_path):
    import toy

    from detkit.engine import Trainer

    first = Trainer.from_config(toy.toy_config(str(tmp_path / 'a'), train_cfg=dict(max_epochs=1, val_interval=0)))
    first.train()
    ckpt = tmp_path / 'a' / 'epoch_1.pth'
    cfg = toy.toy_config(str(tmp_path / 'b'), model=dict(type='ToyDetector', num_classes=2, width=4),
                         train_cfg=dict(max_epochs=2, val_interval=0), resume=str(ckpt))
    with pytest.raises(CheckpointError) as err:
        Trainer.from_config(cfg)
    msg = str(err.value)
    assert '\n' not in msg and str(ckpt) in msg and 'ToyDetector' in msg
    assert f'Trained with: work_dir {tmp_path / "a"}, model ToyDetector.' in msg
    assert f'Config given: work_dir {tmp_path / "b"}, model ToyDetector;' in msg
    assert 'shape differs' in msg


# --------------------------------------------------------------------- item 7: load_from (strict=False)
def test_load_from_with_nothing_matching_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / 'other.pth'
    torch.save({'state_dict': {'foo.weight': torch.zeros(2), 'bar.bias': torch.zeros(2)}}, path)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1))
    with pytest.raises(CheckpointError, match=r"other\.pth holds none of the model's 4 weights"):
        load_model_weights(model, path, strict=False)


def test_load_from_another_class_count_skips_only_the_classification_convs(tmp_path, detkit_logs):
    torch.manual_seed(0)
    four = MODELS.build(_tiny_ssd_cfg(4))
    path = tmp_path / 'four_classes.pth'
    torch.save({'state_dict': four.state_dict(), 'meta': {}}, path)
    torch.manual_seed(1)
    six = MODELS.build(_tiny_ssd_cfg(6))
    init = {k: v.clone() for k, v in six.state_dict().items()}

    load_model_weights(six, path, strict=False)

    cls_keys = sorted(k for k in init if k.startswith('bbox_head.cls_convs.'))
    assert len(cls_keys) == 8  # 4 levels, weight and bias
    for k, v in six.state_dict().items():
        if k in cls_keys:  # (A * 7, ...) against (A * 5, ...): not loaded, the initialisation stays
            assert torch.equal(v, init[k]) and v.shape != four.state_dict()[k].shape, k
        else:
            assert torch.equal(v, four.state_dict()[k]), k
    lines = [r.getMessage() for r in detkit_logs.records if r.name == 'detkit' and r.levelno == logging.WARNING]
    assert len(lines) == 1, lines  # one line naming the skipped head weights; nothing is missing or unused
    assert str(path) in lines[0] and '8 weights' in lines[0] and 'bbox_head.cls_convs.0.weight' in lines[0]
    assert 'shape' in lines[0]


def test_load_from_with_missing_weights_logs_one_line_listing_them(tmp_path, detkit_logs):
    small = nn.Sequential(nn.Conv2d(3, 4, 3))
    big = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1))
    path = tmp_path / 'partial.pth'
    torch.save({'state_dict': small.state_dict()}, path)
    load_model_weights(big, path, strict=False)
    assert torch.equal(big[0].weight, small[0].weight)
    lines = [r.getMessage() for r in detkit_logs.records if r.name == 'detkit' and r.levelno == logging.WARNING]
    assert len(lines) == 1, lines
    assert str(path) in lines[0] and 'partially: 2 of 6 model weights' in lines[0]
    assert "keeping their initialisation: 4 (['1.weight', '1.bias', '2.weight', '2.bias'])" in lines[0]
