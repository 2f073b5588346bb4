"""tools/quickstart.sh: each quickstart recipe runs the whole job (data, training, evaluation, demo, curves) on each
shapes style, pointed at the data by its root and class names alone. Tiny runs: the learning itself is measured
by the full quickstart (README), not here."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'tools' / 'quickstart.sh'
TINY = ('--cfg-options train_cfg.max_epochs=1 train_cfg.val_interval=1 train_dataloader.batch_size=4 '
        'default_hooks.logger.interval=1 env_cfg.num_threads=1')


def run_quickstart(tmp_path: Path, config: str, style: str, photos: Path | None = None) -> tuple[str, Path, Path]:
    data, work = tmp_path / 'data', tmp_path / 'work'
    env = dict(os.environ, PYTHON=sys.executable, CONFIG=config, STYLE=style, DATA=str(data), WORK=str(work),
               NUM_TRAIN='8', NUM_VAL='4', TRAIN_ARGS=TINY, PHOTOS=str(photos or tmp_path / 'no_photos'))
    proc = subprocess.run(['bash', str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, data, work


@pytest.mark.slow
@pytest.mark.parametrize('config,style', [('ssd_shapes', 'hard'), ('retinanet_shapes', 'simple'),
                                          ('m2det_shapes', 'hard')])
def test_quickstart_runs_each_recipe_end_to_end(tmp_path, config, style):
    photos = REPO.parent / 'shared' / 'data' / 'images'
    out, data, work = run_quickstart(tmp_path, f'configs/quickstart/{config}.py', style,
                                     photos if config == 'ssd_shapes' and photos.is_dir() else None)
    # the config as trained reads the generated data under its own class names, in all three loaders
    classes = tuple((data / 'classes.txt').read_text().split())
    assert classes == (('ellipse', 'cross', 'ring', 'heart') if style == 'hard'
                       else ('circle', 'square', 'triangle', 'star'))
    cfg = Config.fromfile(work / f'{config}.py')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert tuple(cfg[loader].dataset.classes) == classes
        assert Path(cfg[loader].dataset.data_root).resolve() == data.resolve()
    assert cfg.model.bbox_head.num_classes == len(classes)
    # evaluation ran on the val split: a VOC table row per class, the mAP line and the COCO summary
    table = (work / 'test_output.txt').read_text()
    for name in classes:
        assert f'| {name}' in table
    assert 'voc/mAP' in table and 'coco/bbox_mAP' in table
    assert 'done in' in out and f'{config}, {style} shapes' in out
    assert (work / 'val_detections.json').stat().st_size > 0
    assert len(list((work / 'demo' / 'shapes').glob('*.jpg'))) == 4
    if config == 'ssd_shapes' and photos.is_dir():
        assert len(list((work / 'demo' / 'photos').glob('*.jpg'))) == len(list(photos.glob('*.jpg')))
    assert (work / 'curves.png').stat().st_size > 0


def test_quickstart_rejects_an_unknown_style(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, STYLE='medium', DATA=str(tmp_path / 'd'), WORK=str(tmp_path / 'w'))
    proc = subprocess.run(['bash', str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "STYLE must be simple or hard, got 'medium'" in proc.stderr
    assert not (tmp_path / 'd').exists()


def test_no_shipped_config_sets_a_work_dir():
    # tools/train.py's default, work_dirs/<config name>, must hold for a config that inherits a shipped one: a
    # work_dir inherited from a quickstart config sent a user's run into the quickstart's folder
    from detkit.utils.config import load_config
    configs = sorted((REPO / 'configs').rglob('*.py'))
    assert len(configs) > 20
    with_work_dir = [str(p.relative_to(REPO)) for p in configs if 'work_dir' in load_config(str(p))]
    assert with_work_dir == []
