"""Configs: _base_ inheritance, command-line overrides and a re-loadable dump."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from detkit.utils import load_config
from detkit.utils.config import DictAction

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def config_tree(tmp_path):
    (tmp_path / '_base_').mkdir()
    (tmp_path / '_base_' / 'model.py').write_text(textwrap.dedent("""
        model = dict(type='SingleStageDetector',
                     bbox_head=dict(type='SSDHead', num_classes=80, in_channels=(512, 1024)),
                     test_cfg=dict(score_thr=0.02, nms=dict(type='nms', iou_threshold=0.45)))
    """))
    (tmp_path / '_base_' / 'schedule.py').write_text(textwrap.dedent("""
        optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.02, momentum=0.9))
        train_cfg = dict(max_epochs=12)
        train_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(300, 300))]
    """))
    (tmp_path / 'child.py').write_text(textwrap.dedent("""
        _base_ = ['./_base_/model.py', './_base_/schedule.py']
        model = dict(bbox_head=dict(num_classes=20))
        optim_wrapper = dict(optimizer=dict(lr=1e-3))
    """))
    return tmp_path


def test_base_inheritance_merges_nested_dicts(config_tree):
    cfg = load_config(config_tree / 'child.py')
    assert cfg.model.bbox_head.num_classes == 20  # overridden
    assert cfg.model.bbox_head.in_channels == (512, 1024)  # inherited beside the override
    assert cfg.model.test_cfg.nms.iou_threshold == 0.45
    assert cfg.optim_wrapper.optimizer.lr == 1e-3 and cfg.optim_wrapper.optimizer.momentum == 0.9
    assert cfg.train_cfg.max_epochs == 12


def test_cfg_options_override_dotted_keys_and_list_items(config_tree):
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(['--cfg-options', 'model.bbox_head.num_classes=3', 'train_cfg.max_epochs=2',
                              'train_pipeline.1.scale=(512,512)', 'optim_wrapper.optimizer.lr=0.5'])
    cfg = load_config(config_tree / 'child.py', args.cfg_options)
    assert cfg.model.bbox_head.num_classes == 3
    assert cfg.train_cfg.max_epochs == 2
    assert tuple(cfg.train_pipeline[1].scale) == (512, 512)
    assert cfg.optim_wrapper.optimizer.lr == 0.5


def test_dump_reloads_to_the_same_config(config_tree, tmp_path):
    cfg = load_config(config_tree / 'child.py', {'model.bbox_head.num_classes': 7})
    out = tmp_path / 'dumped.py'
    cfg.dump(str(out))
    again = load_config(out)
    assert again.to_dict() == cfg.to_dict()
    assert 'num_classes=7' in cfg.pretty_text.replace(' ', '')


def test_missing_config_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.py'):
        load_config(tmp_path / 'nope.py')


def test_every_shipped_config_loads():
    configs = sorted((REPO / 'configs').rglob('*.py'))
    assert configs
    for path in configs:
        cfg = load_config(path)
        assert cfg.filename.endswith(path.name)


def test_print_config_tool_dumps_a_loadable_config(config_tree, tmp_path):
    out = tmp_path / 'final.py'
    result = subprocess.run([sys.executable, str(REPO / 'tools' / 'misc' / 'print_config.py'),
                             str(config_tree / 'child.py'), '--cfg-options', 'model.bbox_head.num_classes=4',
                             '--save-path', str(out)], capture_output=True, text=True, check=True)
    assert 'num_classes=4' in result.stdout.replace(' ', '')
    assert load_config(out).model.bbox_head.num_classes == 4


@pytest.mark.parametrize('broken', ['_base_/schedule.py', 'child.py'])
def test_a_syntax_error_names_the_file_and_line(config_tree, broken):
    path = config_tree / broken
    path.write_text(path.read_text() + '\nbroken = dict(a=1\n')
    with pytest.raises(SyntaxError) as err:
        load_config(config_tree / 'child.py')
    assert err.value.filename == str(path)
    assert err.value.lineno == len(path.read_text().splitlines())
    assert str(path) in str(err.value)


def _parse_options(*options):
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(['--cfg-options', *options]).cfg_options


def test_cfg_options_accept_dict_values(config_tree):
    opts = _parse_options('model.backbone.init_cfg=dict(type="Pretrained", checkpoint="/w/r50.pth")',
                          "model.bbox_head.loss=dict(type=Focal,gamma=2.0,alpha=[0.25,(1,2)],on=True,off=None)",
                          'train_pipeline=[dict(type=LoadImageFromFile),dict(type=Resize,scale=(64,64))]',
                          'a=1,2', 'b=[x,y]', 'c=None')
    assert opts['model.backbone.init_cfg'] == dict(type='Pretrained', checkpoint='/w/r50.pth')
    assert opts['model.bbox_head.loss'] == dict(type='Focal', gamma=2.0, alpha=[0.25, (1, 2)], on=True, off=None)
    assert opts['train_pipeline'] == [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64))]
    assert (opts['a'], opts['b'], opts['c']) == ([1, 2], ['x', 'y'], None)  # mmengine's rules are unchanged
    cfg = load_config(config_tree / 'child.py', opts)
    assert cfg.model.backbone.init_cfg.checkpoint == '/w/r50.pth'
    assert cfg.train_pipeline[1].scale == (64, 64)


@pytest.mark.parametrize('option,match', [('a=dict(type=x', 'unbalanced brackets'),
                                          ('a=dict(x)', "'x' is not key=value"),
                                          ('novalue', 'KEY=VALUE')])
def test_malformed_cfg_options_are_argument_errors(option, match, capsys):
    with pytest.raises(SystemExit) as err:
        _parse_options(option)
    assert err.value.code == 2
    err_text = capsys.readouterr().err
    assert '--cfg-options' in err_text and match in err_text and option in err_text


def _tool(relpath):
    """A script under tools/ imported as a module (its ``main`` not run)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(Path(relpath).stem, REPO / relpath)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cfg_options_keep_spaces_inside_values(config_tree):
    # tools/test.py's own argument parser, as the shell hands it the words
    args = _tool('tools/test.py').parse_args([
        str(config_tree / 'child.py'), 'x.pth', '--cfg-options', 'data_root=/tmp/my data/',
        'classes=big circle,square', 'sizes=1, 2', 'scale=( 512 , 320 )',
        'model.backbone.init_cfg=dict(type=Pretrained, checkpoint=/w/my weights.pth)', 'names=[a b, "c d"]'])
    opts = args.cfg_options
    assert opts['data_root'] == '/tmp/my data/'
    assert opts['classes'] == ['big circle', 'square']
    assert opts['sizes'] == [1, 2] and opts['scale'] == (512, 320)  # spaces around items are not part of them
    assert opts['model.backbone.init_cfg'] == dict(type='Pretrained', checkpoint='/w/my weights.pth')
    assert opts['names'] == ['a b', 'c d']
    cfg = load_config(config_tree / 'child.py', opts)
    assert cfg.data_root == '/tmp/my data/' and cfg.classes == ['big circle', 'square']


def test_a_base_cycle_is_named_in_order(tmp_path):
    (tmp_path / 'sub').mkdir()
    (tmp_path / 'a.py').write_text("_base_ = ['./sub/b.py']\nx = 1\n")
    (tmp_path / 'sub' / 'b.py').write_text("_base_ = '../c.py'\ny = 2\n")
    (tmp_path / 'c.py').write_text("_base_ = ['./a.py']\nz = 3\n")
    (tmp_path / 'top.py').write_text("_base_ = ['./c.py']\n")
    a, b, c = (str(tmp_path / p) for p in ('a.py', 'sub/b.py', 'c.py'))
    with pytest.raises(ValueError) as err:
        load_config(tmp_path / 'a.py')
    assert f'{a} -> {b} -> {c} -> {a}' in str(err.value)
    with pytest.raises(ValueError) as err:  # entered from outside the cycle
        load_config(tmp_path / 'top.py')
    assert f'{c} -> {a} -> {b} -> {c}' in str(err.value) and str(tmp_path / 'top.py') in str(err.value)
    (tmp_path / 'self.py').write_text("_base_ = './self.py'\n")
    with pytest.raises(ValueError, match='self.py -> .*self.py'):
        load_config(tmp_path / 'self.py')
