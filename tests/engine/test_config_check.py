"""Config keys nothing reads are errors naming the key, its section and the closest valid key."""
import logging
from pathlib import Path

import pytest
import toy

from detkit.engine import Trainer
from detkit.engine.config_check import ConfigKeyError, check_config
from detkit.utils import load_config

REPO = Path(__file__).resolve().parents[2]


def _cfg(tmp_path, **overrides):
    cfg = toy.toy_config(str(tmp_path), **overrides)
    return cfg


@pytest.mark.parametrize('option,match', [
    # the three of the probe: each trained as if it were absent
    ({'trian_cfg': dict(max_epochs=1)}, r"unknown top-level key 'trian_cfg'; did you mean 'train_cfg'\?"),
    ({'train_cfg.max_epoch': 1}, r"unknown key 'max_epoch' in train_cfg; did you mean 'max_epochs'\?"),
    ({'default_hooks.checkpoint.intervall': 5},
     r"unknown key 'intervall' in default_hooks.checkpoint; did you mean 'interval'\?"),
    # and the other sections the engine reads
    ({'optim_wraper': dict(optimizer=dict(type='SGD', lr=0.1))}, r"'optim_wraper'; did you mean 'optim_wrapper'"),
    ({'param_schedular': []}, r"'param_schedular'; did you mean 'param_scheduler'"),
    ({'defualt_hooks': {}}, r"'defualt_hooks'; did you mean 'default_hooks'"),
    ({'default_hooks.timer': dict(type='IterTimerHook')}, r"unknown key 'timer' in default_hooks"),
    ({'default_hooks.logger.intreval': 5}, r"'intreval' in default_hooks.logger; did you mean 'interval'"),
    ({'env_cfg.mp_cfg': dict(mp_start_method='fork')}, r"unknown key 'mp_cfg' in env_cfg"),
    ({'auto_scale_lr.enabled': True}, r"'enabled' in auto_scale_lr; did you mean 'enable'"),
    ({'optim_wrapper.clip_gard': None}, r"'clip_gard' in optim_wrapper; did you mean 'clip_grad'"),
    ({'optim_wrapper.clip_grad.max_nrom': 1.0}, r"'max_nrom' in optim_wrapper.clip_grad; did you mean 'max_norm'"),
    ({'optim_wrapper.paramwise_cfg': dict(norm_decay=0.0)},
     r"'norm_decay' in optim_wrapper.paramwise_cfg; did you mean 'norm_decay_mult'"),
    # mmengine's constructor reads it but detkit has no deformable convolutions: it would do nothing
    ({'optim_wrapper.paramwise_cfg': dict(dcn_offset_lr_mult=0.1)},
     r"'dcn_offset_lr_mult' in optim_wrapper.paramwise_cfg"),
    ({'optim_wrapper.optimizer.momentun': 0.9}, r"'momentun' in optimizer SGD; did you mean 'momentum'"),
    ({'param_scheduler.1.milestone': [2]}, r"'milestone' in scheduler MultiStepLR; did you mean 'milestones'"),
    ({'train_dataloader.batchsize': 4}, r"'batchsize' in train_dataloader; did you mean 'batch_size'"),
    ({'train_cfg.type': 'IterBasedTrainLoop'}, r"train_cfg.type='IterBasedTrainLoop' is not supported"),
    # mmengine keys the engine does not honour
    ({'custom_hooks': [dict(type='EMAHook')]}, r"'custom_hooks' is not supported by detkit"),
    ({'visualizer': dict(type='DetLocalVisualizer')}, r"'visualizer' is not supported by detkit"),
    ({'val_cfg': dict(type='ValLoop')}, r"'val_cfg' is not supported by detkit"),
    ({'default_scope': 'mmdet'}, r"default_scope='mmdet' is not supported"),
])
def test_keys_nothing_reads_are_errors_before_anything_is_built(tmp_path, option, match):
    cfg = _cfg(tmp_path)
    cfg.merge_from_dict(option)
    with pytest.raises(ConfigKeyError, match=match):
        Trainer.from_config(cfg)
    assert not list(tmp_path.iterdir())  # refused before the work dir was touched


def test_every_problem_is_listed_once(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.merge_from_dict({'trian_cfg': {}, 'train_cfg.max_epoch': 1})
    with pytest.raises(ConfigKeyError) as err:
        check_config(cfg, 'my_config.py')
    text = str(err.value)
    assert text.startswith('config my_config.py has 2 problems:') and 'trian_cfg' in text and 'max_epoch' in text


def test_helper_variables_and_supported_mmengine_keys_are_accepted(tmp_path):
    helpers = dict(input_size=300, mean=[1, 2, 3], std=[1, 1, 1], classes=('a', 'b'), data_root='data/',
                   dataset_type='VOCDataset', img_scale=(300, 300), train_pipeline=[], test_pipeline=[], bn=None,
                   max_epochs=2, vis_backends=[dict(type='LocalVisBackend')], backend_args=None)
    cfg = _cfg(tmp_path, default_scope='detkit', log_level='DEBUG', launcher='none', load_from=None, resume=False,
               find_unused_parameters=False, sync_bn=False, **helpers)
    cfg.merge_from_dict({'train_cfg.type': 'EpochBasedTrainLoop', 'default_hooks.logger.type': 'LoggerHook',
                         'optim_wrapper.type': 'OptimWrapper', 'train_dataloader.sampler': dict(
                             type='DefaultSampler', shuffle=True),
                         # the paramwise options of mmengine's DefaultOptimWrapperConstructor
                         'optim_wrapper.paramwise_cfg': dict(
                             norm_decay_mult=0.0, bias_decay_mult=0.0, bias_lr_mult=2.0, dwconv_decay_mult=0.0,
                             flat_decay_mult=0.0, custom_keys={'cls_conv': dict(lr_mult=0.1, decay_mult=0.0)})})
    check_config(cfg)
    trainer = Trainer.from_config(cfg)
    assert logging.getLogger('detkit').level == logging.DEBUG  # log_level is honoured, not ignored
    trainer.close()
    cfg.log_level = 'LOUD'
    with pytest.raises(ValueError, match="log_level must be one of .* got 'LOUD'"):
        check_config(cfg)
    Trainer.from_config(_cfg(tmp_path)).close()  # the next run logs at INFO again
    assert logging.getLogger('detkit').level == logging.INFO


def test_every_shipped_config_passes():
    configs = sorted((REPO / 'configs').rglob('*.py'))
    assert configs
    for path in configs:
        check_config(load_config(path))


@pytest.mark.parametrize('key,value,match', [
    ('runner', dict(type='EpochBasedRunner', max_epochs=12), r"train_cfg=dict\(max_epochs="),
    ('optimizer', dict(type='SGD', lr=0.02), r"optim_wrapper=dict\(optimizer=dict\(type='SGD'"),
    ('optimizer_config', dict(grad_clip=dict(max_norm=35)), r"optim_wrapper.clip_grad=dict\(max_norm="),
    ('lr_config', dict(policy='step', step=[8, 11]), r"param_scheduler=\[.*MultiStepLR"),
    ('data', dict(samples_per_gpu=2, train=dict(type='VOCDataset')),
     r"train_dataloader=dict\(batch_size=.*dataset=.*val_dataloader.*test_dataloader"),
    ('evaluation', dict(interval=1, metric='mAP'), r"val_evaluator=dict\(type='VOCMetric'.*train_cfg.val_interval"),
    ('checkpoint_config', dict(interval=1), r"default_hooks.checkpoint=dict\(interval="),
    ('log_config', dict(interval=50), r"default_hooks.logger=dict\(interval="),
])
def test_mmdetection_2_keys_are_refused_with_their_3_equivalent(tmp_path, key, value, match):
    cfg = _cfg(tmp_path)
    cfg[key] = value
    with pytest.raises(ConfigKeyError,
                       match=rf"'{key}' is not supported by detkit: it is mmdetection 2.x's; .*{match}") as err:
        Trainer.from_config(cfg)
    assert '\n' not in str(err.value)  # one line
    assert not list(tmp_path.iterdir())
