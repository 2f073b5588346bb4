"""Writing the tools' outputs safely: never over one of their inputs, refused before the work when the destination
cannot be written, and a failed write is an error naming the file rather than a silent no-op.

Every tool that writes files (``tools/demo.py``, ``tools/test.py``, ``tools/deployment/*``,
``tools/model_converters/*``) calls these; a refusal is an :class:`OutputPathError` (a ``ValueError``) whose
message is the one line the tool prints.
"""
from __future__ import annotations

import os
import os.path as osp
import tempfile
from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from .errors import DetkitError

__all__ = ['OutputPathError', 'check_not_inputs', 'check_writable', 'check_output_file', 'mirror_paths', 'imwrite',
           'open_video_writer']


class OutputPathError(DetkitError, ValueError):
    """An output path that must not or cannot be written; the message names it (and the input it would replace)."""


def _file_key(path: str) -> tuple[int, int] | None:
    """``(device, inode)`` of the file ``path`` resolves to (through symlinks), ``None`` when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_not_inputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike | None],
                     option: str) -> None:
    """Refuse outputs that are one of the inputs: the same path after resolving symlinks, or the same file
    (``os.path.samefile``: a hard link, or a symlink to it).

    Args:
        outputs: the files the tool would write.
        inputs: the files it reads (``None`` and empty entries are ignored).
        option: the argument that chose the outputs, for the message (e.g. ``'--out out/'``).

    Raises:
        OutputPathError: ``"<option>: <output> is the input <input>; ..."``, naming both paths.
    """
    by_key: dict[tuple[int, int], str] = {}
    by_path: dict[str, str] = {}
    for path in inputs:
        if not path:
            continue
        path = os.fspath(path)
        by_path.setdefault(osp.realpath(path), path)
        key = _file_key(path)
        if key is not None:
            by_key.setdefault(key, path)
    for out in outputs:
        out = os.fspath(out)
        key = _file_key(out)
        src = by_key.get(key) if key is not None else None
        src = src or by_path.get(osp.realpath(out))
        if src is not None:
            raise OutputPathError(f'{option}: writing {out} would overwrite the input {src}; choose an output '
                                  'outside the inputs')


def _creatable_dir(directory: str) -> str:
    """The nearest existing ancestor of ``directory`` (itself when it exists), which must be a directory."""
    probe = directory
    while not osp.exists(probe):
        parent = osp.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not osp.isdir(probe):
        raise OutputPathError(f'cannot create {directory}: {probe} is a file, not a directory')
    return probe


def check_writable(path: str | os.PathLike, *, directory: bool, option: str) -> None:
    """Check, before the work and without creating anything that stays, that ``path`` can be written.

    A file output must not be an existing directory; a directory output must not be an existing file. The
    directory that would hold the output must exist or be creatable (its nearest existing ancestor is a
    directory), and a file can be created there (probed with a temporary file, removed at once: this also catches
    read-only file systems, where permission bits say nothing for root).

    Args:
        path: the output file, or the output directory with ``directory=True``.
        directory: whether ``path`` is a directory to write files into.
        option: the argument that named ``path``, for the message (e.g. ``'--out'``).

    Raises:
        OutputPathError: naming ``option`` and ``path``, and why it cannot be written.
    """
    path = os.fspath(path)
    full = osp.abspath(path)
    if directory:
        if osp.exists(full) and not osp.isdir(full):
            raise OutputPathError(f'{option} {path} is a file; expected a directory to write into')
        target = full
    else:
        if osp.isdir(full):
            raise OutputPathError(f'{option} {path} is a directory; give a file name')
        if osp.exists(full) and not os.access(full, os.W_OK):
            raise OutputPathError(f'{option} {path} is not writable')
        target = osp.dirname(full)
    try:
        existing = _creatable_dir(target)
    except OutputPathError as err:
        raise OutputPathError(f'{option} {path}: {err}') from None
    try:
        fd, tmp = tempfile.mkstemp(dir=existing, prefix='.detkit-write-check-')
    except OSError as err:
        raise OutputPathError(f'{option} {path}: cannot write into {existing} ({err.strerror})') from None
    os.close(fd)
    os.remove(tmp)


def check_output_file(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], option: str) -> None:
    """:func:`check_writable` (a file) and :func:`check_not_inputs` for one output file.

    Raises:
        OutputPathError: naming ``option``, ``path`` and, when it is one, the input it would overwrite.
    """
    check_not_inputs([path], inputs, f'{option} {os.fspath(path)}')
    check_writable(path, directory=False, option=option)


def mirror_paths(paths: Sequence[str], out_dir: str) -> dict[str, str]:
    """Unique output paths in ``out_dir`` for input files: each one's path relative to the inputs' common parent
    directory (``a/x.jpg`` and ``b/x.jpg`` -> ``OUT/a/x.jpg``, ``OUT/b/x.jpg``; files of one folder ->
    ``OUT/<name>``).

    Returns:
        ``{input path: output path}`` (the keys as given).
    """
    if not paths:
        return {}
    full = [osp.abspath(p) for p in paths]
    common = osp.commonpath([osp.dirname(p) for p in full])
    return {p: osp.join(out_dir, osp.relpath(f, common)) for p, f in zip(paths, full)}


def imwrite(path: str, img: np.ndarray) -> None:
    """``cv2.imwrite`` that fails loudly.

    Raises:
        OSError: naming ``path`` when OpenCV writes nothing (unwritable directory, unknown extension, ...).
    """
    try:
        ok = cv2.imwrite(path, img)
    except cv2.error as err:
        raise OSError(f'cannot write image {path}: {str(err).strip().splitlines()[-1]}') from None
    if not ok:
        raise OSError(f'cannot write image {path} (is its directory writable? is the extension an image format?)')


def open_video_writer(path: str, fps: float, size: tuple[int, int], fourcc: str = 'mp4v') -> cv2.VideoWriter:
    """An opened ``cv2.VideoWriter`` for ``(width, height)`` frames.

    Raises:
        OSError: naming ``path`` when the writer cannot be opened (checked before any frame is written).
    """
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        writer.release()
        raise OSError(f'cannot open {path} for writing a {fourcc} video of {size[0]}x{size[1]} frames')
    return writer
