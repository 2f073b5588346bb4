"""User errors reach the command line as one line; bugs keep their traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from detkit.engine.config_check import ConfigKeyError
from detkit.utils.checkpoint_io import CheckpointError
from detkit.utils.errors import ConfigError, ConfigTypeError, DetkitError, run_tool
from detkit.utils.file_io import OutputPathError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize('error', [ConfigError('test_cfg.score_thr must be in [0, 1), got nan'),
                                   ConfigKeyError("unknown key 'intervall' in default_hooks.checkpoint"),
                                   ConfigTypeError('detkit::model ResNet: unexpected argument'),
                                   CheckpointError('cannot load checkpoint x.pth'),
                                   OutputPathError('--out a.jpg is the input a.jpg'),
                                   FileNotFoundError('config file not found: x.py')])
def test_a_user_error_is_one_line_and_exit_2(error, capsys, monkeypatch):
    monkeypatch.delenv('DETKIT_TRACEBACK', raising=False)

    def main():
        raise error

    with pytest.raises(SystemExit) as exit_info:
        run_tool(main)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f'error: {error.args[0]}\n'  # the message itself, not a KeyError's repr of it


def test_a_bug_keeps_its_traceback_and_detkit_traceback_shows_user_errors(monkeypatch):
    def bug():
        raise ValueError('an internal error')

    with pytest.raises(ValueError, match='an internal error'):
        run_tool(bug)
    monkeypatch.setenv('DETKIT_TRACEBACK', '1')

    def user():
        raise ConfigError('bad value')

    with pytest.raises(ConfigError):
        run_tool(user)


def test_the_user_errors_are_still_the_builtin_classes_callers_catch():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigTypeError, TypeError)
    assert issubclass(ConfigKeyError, KeyError) and issubclass(CheckpointError, RuntimeError)
    assert issubclass(OutputPathError, ValueError)
    assert all(issubclass(c, DetkitError) for c in (ConfigError, ConfigTypeError, ConfigKeyError, CheckpointError,
                                                    OutputPathError))


def test_a_tool_prints_a_config_cycle_as_one_line(tmp_path):
    (tmp_path / 'a.py').write_text("_base_ = ['b.py']\n")
    (tmp_path / 'b.py').write_text("_base_ = ['a.py']\n")
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'misc' / 'print_config.py'), str(tmp_path / 'a.py')],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert 'Traceback' not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    a, b = tmp_path / 'a.py', tmp_path / 'b.py'
    assert len(lines) == 1 and lines[0].startswith('error: config file') and f'{a} -> {b} -> {a}' in lines[0], \
        proc.stderr
