"""detkit.utils.file_io: outputs never over inputs, unwritable destinations refused before the work, failed writes
raised."""
import os

import cv2
import numpy as np
import pytest

from detkit.utils import file_io
from detkit.utils.file_io import (OutputPathError, check_not_inputs, check_output_file, check_writable, imwrite,
                                  mirror_paths, open_video_writer)


def test_an_output_that_is_an_input_is_refused_naming_both(tmp_path):
    src = tmp_path / 'v' / 'clip.mp4'
    src.parent.mkdir()
    src.write_bytes(b'video')
    (tmp_path / 'link.mp4').symlink_to(src)
    os.link(src, tmp_path / 'hard.mp4')
    for out in (src, tmp_path / 'v' / '..' / 'v' / 'clip.mp4', tmp_path / 'link.mp4', tmp_path / 'hard.mp4'):
        with pytest.raises(OutputPathError) as err:
            check_not_inputs([tmp_path / 'other.mp4', out], [tmp_path / 'cfg.py', src], '--out v/')
        assert str(err.value) == (f'--out v/: writing {out} would overwrite the input {src}; choose an output '
                                  'outside the inputs')
    check_not_inputs([tmp_path / 'v' / 'clip_det.mp4'], [src, None], '--out')  # another file: fine
    with pytest.raises(OutputPathError, match='is the input|would overwrite the input'):
        check_output_file(src, [src], 'dst')
    assert src.read_bytes() == b'video'


def test_unwritable_destinations_are_refused_without_creating_anything(tmp_path):
    a_file = tmp_path / 'notes.txt'
    a_file.write_text('x')
    with pytest.raises(OutputPathError, match=f'--out {a_file} is a file; expected a directory'):
        check_writable(a_file, directory=True, option='--out')
    with pytest.raises(OutputPathError, match=f'--out {tmp_path} is a directory; give a file name'):
        check_writable(tmp_path, directory=False, option='--out')
    under_file = a_file / 'sub' / 'model.onnx'  # ENOTDIR: its folder can never be created
    with pytest.raises(OutputPathError, match=f'--out {under_file}: cannot create .*: {a_file} is a file'):
        check_writable(under_file, directory=False, option='--out')
    with pytest.raises(OutputPathError, match=f'{a_file} is a file'):
        check_writable(a_file / 'vis', directory=True, option='--show-dir')
    # creatable: fine, and nothing is left behind (neither the folders nor the probe file)
    check_writable(tmp_path / 'new' / 'deeper' / 'model.onnx', directory=False, option='--out')
    check_writable(tmp_path / 'vis', directory=True, option='--show-dir')
    assert sorted(os.listdir(tmp_path)) == ['notes.txt']


def test_a_directory_that_refuses_new_files_is_refused(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(30, 'Read-only file system')

    monkeypatch.setattr(file_io.tempfile, 'mkstemp', read_only)
    with pytest.raises(OutputPathError, match=f'--out {tmp_path / "m.onnx"}: cannot write into {tmp_path} '
                                              r'\(Read-only file system\)'):
        check_writable(tmp_path / 'm.onnx', directory=False, option='--out')


def test_mirror_paths_keeps_names_unique():
    assert mirror_paths(['/d/a/x.jpg', '/d/b/x.jpg', '/d/b/c/y.png'], 'out') == {
        '/d/a/x.jpg': 'out/a/x.jpg', '/d/b/x.jpg': 'out/b/x.jpg', '/d/b/c/y.png': 'out/b/c/y.png'}
    assert mirror_paths(['/d/img/1.jpg', '/d/img/2.jpg'], 'out') == {'/d/img/1.jpg': 'out/1.jpg',
                                                                   '/d/img/2.jpg': 'out/2.jpg'}
    assert mirror_paths([], 'out') == {}


def test_imwrite_raises_when_nothing_is_written(tmp_path, monkeypatch):
    img = np.zeros((4, 4, 3), np.uint8)
    imwrite(str(tmp_path / 'ok.png'), img)
    assert cv2.imread(str(tmp_path / 'ok.png')).shape == (4, 4, 3)
    with pytest.raises(OSError, match=f'cannot write image {tmp_path / "x.unknown"}'):
        imwrite(str(tmp_path / 'x.unknown'), img)  # OpenCV raises cv2.error for an unknown extension
    monkeypatch.setattr(cv2, 'imwrite', lambda *a, **k: False)
    with pytest.raises(OSError, match=f'cannot write image {tmp_path / "ro.png"}'):
        imwrite(str(tmp_path / 'ro.png'), img)


def test_open_video_writer_checks_that_it_opened(tmp_path):
    writer = open_video_writer(str(tmp_path / 'ok.mp4'), 5, (16, 16))
    writer.release()
    bad = tmp_path / 'no_such_dir' / 'x.mp4'
    with pytest.raises(OSError, match=f'cannot open {bad} for writing a mp4v video of 16x16 frames'):
        open_video_writer(str(bad), 5, (16, 16))
