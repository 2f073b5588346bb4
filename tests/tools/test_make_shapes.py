"""tools/dataset_converters/make_shapes.py: the CLI writes loadable, deterministic datasets in every format."""
from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detkit.datasets import build_dataset, shapes_dataset_cfg

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'tools' / 'dataset_converters' / 'make_shapes.py'


def import_cli():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import make_shapes
    finally:
        sys.path.pop(0)
    return make_shapes


def test_cli_formats_hold_the_same_boxes(tmp_path, capsys):
    # once as a script (a fresh process, as users run it), then in-process for the other formats
    out = subprocess.run([sys.executable, str(SCRIPT), '--out', str(tmp_path / 'voc'), '--num', '5', '--format',
                          'voc', '--seed', '11', '--size', '128', '--split', 'val'], capture_output=True, text=True,
                         cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 0, out.stderr
    assert 'wrote 5 images' in out.stdout and 'voc dataset config' in out.stdout
    for fmt in ('coco', 'txt'):
        import_cli().main(['--out', str(tmp_path / fmt), '--num', '5', '--format', fmt, '--seed', '11', '--size',
                           '128', '--split', 'val'])
        assert f'{fmt} dataset config' in capsys.readouterr().out
    loaded = {fmt: build_dataset(shapes_dataset_cfg(str(tmp_path / fmt), fmt, split='val'))
              for fmt in ('voc', 'coco', 'txt')}
    for i in range(5):
        ref = loaded['voc'].get_ann_info(i)
        for fmt in ('coco', 'txt'):
            got = loaded[fmt].get_ann_info(i)
            np.testing.assert_array_equal(got['bboxes'], ref['bboxes'])
            np.testing.assert_array_equal(got['labels'], ref['labels'])
        # identical image bytes across formats
        assert filecmp.cmp(tmp_path / 'voc' / 'JPEGImages' / f'val_{i:06d}.jpg',
                           tmp_path / 'coco' / 'images' / f'val_{i:06d}.jpg', shallow=False)
    cats = json.load(open(tmp_path / 'coco' / 'annotations' / 'instances_val.json'))['categories']
    assert [c['name'] for c in cats] == ['circle', 'square', 'triangle', 'star']
    assert (tmp_path / 'voc' / 'classes.txt').read_text().split() == ['circle', 'square', 'triangle', 'star']


def test_cli_is_deterministic_and_validates(tmp_path):
    make_shapes = import_cli()
    for d in ('a', 'b'):
        make_shapes.main(['--out', str(tmp_path / d), '--num', '3', '--format', 'all', '--seed', '4', '--size', '96',
                          '--num-classes', '3'])
    for rel in ('train.txt', 'annotations/instances_train.json', 'Annotations/train_000002.xml',
                'JPEGImages/train_000001.jpg', 'images/train_000000.jpg'):
        assert filecmp.cmp(tmp_path / 'a' / rel, tmp_path / 'b' / rel, shallow=False), rel
    labels = build_dataset(shapes_dataset_cfg(str(tmp_path / 'a'), 'txt', num_classes=3)).get_ann_info(0)['labels']
    assert labels.max() < 3
    with pytest.raises(SystemExit):
        make_shapes.main(['--out', str(tmp_path / 'c'), '--num', '0'])


def _tree_digests(root: Path) -> dict[str, tuple[int, str]]:
    """Per file extension: (number of files, sha256 prefix over their sorted relative paths and bytes)."""
    import hashlib
    groups: dict[str, list[Path]] = {}
    for path in root.rglob('*'):
        if path.is_file():
            groups.setdefault(path.suffix, []).append(path)
    out = {}
    for ext, paths in sorted(groups.items()):
        h = hashlib.sha256()
        for rel in sorted(os.path.relpath(p, root) for p in paths):
            h.update(rel.encode())
            h.update((root / rel).read_bytes())
        out[ext] = (len(paths), h.hexdigest()[:16])
    return out


def test_cli_default_style_writes_the_pre_change_files(tmp_path):
    """Without --style the CLI writes the simple style, byte for byte what it wrote before --style existed."""
    import_cli().main(['--out', str(tmp_path), '--num', '3', '--format', 'voc', '--workers', '1'])
    # digests of `make_shapes.py --out DIR --num 3 --format voc --workers 1` run at commit 8fa8ec1 (pre-change)
    assert _tree_digests(tmp_path) == {'.jpg': (3, 'fec3f6048269b1d7'), '.txt': (2, 'dace6c079ec8d779'),
                                       '.xml': (3, 'f912997081987217')}


def test_cli_hard_style(tmp_path, capsys):
    import xml.etree.ElementTree as ET

    import cv2
    hard = ['ellipse', 'cross', 'ring', 'heart']
    import_cli().main(['--out', str(tmp_path), '--num', '4', '--format', 'all', '--seed', '2', '--size', '128',
                       '--style', 'hard', '--workers', '1'])
    assert 'style hard' in capsys.readouterr().out
    assert (tmp_path / 'classes.txt').read_text().split() == hard
    coco = json.load(open(tmp_path / 'annotations' / 'instances_train.json'))
    assert [c['name'] for c in coco['categories']] == hard
    for i, img_info in enumerate(coco['images']):
        h, w = cv2.imread(str(tmp_path / 'images' / img_info['file_name'])).shape[:2]
        assert (img_info['height'], img_info['width']) == (h, w)
        size = ET.parse(tmp_path / 'Annotations' / f'train_{i:06d}.xml').getroot().find('size')
        assert (int(size.findtext('height')), int(size.findtext('width'))) == (h, w)
    loaded = {fmt: build_dataset(shapes_dataset_cfg(str(tmp_path), fmt, style='hard'))
              for fmt in ('voc', 'coco', 'txt')}
    for i in range(4):
        ref = loaded['voc'].get_ann_info(i)
        assert len(ref['bboxes']) >= 1
        for fmt in ('coco', 'txt'):
            np.testing.assert_array_equal(loaded[fmt].get_ann_info(i)['bboxes'], ref['bboxes'])
            np.testing.assert_array_equal(loaded[fmt].get_ann_info(i)['labels'], ref['labels'])
    for bad in (['--style', 'medium'], ['--style', 'hard', '--num-classes', '5']):
        with pytest.raises(SystemExit):
            import_cli().main(['--out', str(tmp_path / 'x'), '--num', '1'] + bad)


def test_make_shapes_does_not_import_torch(tmp_path):
    """Generating the data (and each worker process it spawns) needs numpy and OpenCV only: importing torch would
    add seconds to every call of the quickstart and the tutorials."""
    code = ('import runpy, sys; sys.argv = [sys.argv[1], "--out", sys.argv[2], "--num", "2", "--workers", "1"]; '
            'runpy.run_path(sys.argv[0], run_name="__main__"); print(sorted(m for m in ("torch", "detkit.datasets") '
            'if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code, str(SCRIPT), str(tmp_path / 'd')], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == '[]'
    assert len(list((tmp_path / 'd' / 'JPEGImages').glob('*.jpg'))) == 2
