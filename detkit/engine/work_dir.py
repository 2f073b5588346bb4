"""The work dir of a training run: one run at a time (a lock file), and no leftovers from interrupted runs.

**Lock.** A training run holds ``<work_dir>/.detkit.lock`` with ``fcntl.flock`` from start to end; the file holds
the holder's PID, host, start time and command line. A second run on the same work dir is refused with a
:class:`WorkDirBusyError` naming the work dir and that process, instead of sharing its log and overwriting its
checkpoints. The kernel releases a ``flock`` when its process dies, however it dies, so a crashed or killed run
never leaves the work dir locked (the file itself stays; only the lock on it counts). Within one process the lock
is re-entrant (``tools/train.py`` holds it while it writes the config, then the trainer takes it again). A forked
child (a data-loader worker) closes the descriptor it inherits, so it never holds the work dir past its parent.

**Leftovers.** :func:`tidy_work_dir` removes the temporary files of checkpoint writes that a ``kill -9``
interrupted (``.epoch_3.pth.<random>.tmp``) and, when a run resumes, its own surplus ``best_*.pth``; it never
removes a checkpoint of another run (see :mod:`detkit.engine.checkpoint`, ``run_id``). It runs under the lock, so
no other run can be writing those files.

**Symbolic links.** The files detkit creates in a work dir (the lock file, the config dump, the logs,
``tf_logs``) are opened with ``O_NOFOLLOW`` (:func:`open_in_work_dir`): a link there is refused with a
:class:`WorkDirError` naming it, so the file it points to is never truncated or overwritten. Checkpoints are
renamed into place, which replaces a link itself (:func:`~detkit.engine.checkpoint.save_checkpoint`).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import socket
import sys
import time

from detkit.utils.errors import DetkitError

from .checkpoint import checkpoint_meta

__all__ = ['LOCK_FILE', 'WorkDirError', 'WorkDirBusyError', 'WorkDirLock', 'tidy_work_dir', 'BEST_CKPT',
           'open_in_work_dir', 'write_work_dir_file', 'check_not_a_link']

LOCK_FILE = '.detkit.lock'
#: ``best_<metric>_epoch_<N>.pth``, written by the trainer next to ``epoch_<N>.pth``
BEST_CKPT = re.compile(r'^best_.+_epoch_(\d+)\.pth$')
# save_checkpoint's temporary files: mkstemp(prefix='.<name>.', suffix='.tmp') for epoch_N.pth / best_*.pth
_TMP_CKPT = re.compile(r'^\.(epoch_\d+|best_.+)\.pth\.[^.]+\.tmp$')

# re-entrancy within a process: real path -> [file descriptor, number of holders]
_HELD: dict[str, list[int]] = {}


def _forget_inherited_locks() -> None:
    """In a forked child (data-loader workers): close the inherited lock descriptors.

    A flock belongs to the open file description, which fork shares: a worker that kept the descriptor would
    hold the work dir after its parent released it (or died). The parent's own descriptor keeps the lock.
    """
    for fd, _ in _HELD.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_inherited_locks)


class WorkDirError(DetkitError, RuntimeError):
    """A work dir that cannot be used: not creatable or writable, or a file detkit writes there is a link."""


class WorkDirBusyError(WorkDirError):
    """Another process is training in this work dir."""


def check_not_a_link(path: str | os.PathLike) -> None:
    """Refuse a path in a work dir that is a symbolic link (detkit would write through it).

    Raises:
        WorkDirError: naming the link and its target.
    """
    path = os.fspath(path)
    if os.path.islink(path):
        raise WorkDirError(
            f'{path} is a symbolic link (to {os.readlink(path)}); detkit does not write through links in a work dir, '
            'so that the file it points to is never overwritten. Remove the link, or use another --work-dir')


def open_in_work_dir(path: str | os.PathLike, flags: int, mode: int = 0o666) -> int:
    """``os.open(path, flags | O_CREAT | O_NOFOLLOW | O_CLOEXEC, mode)``: a file descriptor, never through a link.

    Raises:
        WorkDirError: naming ``path`` when it is a symbolic link, or when it cannot be created or opened.
    """
    path = os.fspath(path)
    try:
        return os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP or os.path.islink(path):
            check_not_a_link(path)
        raise WorkDirError(f'cannot write {path}: {e.strerror}') from None


def write_work_dir_file(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` (created or truncated), refusing a symbolic link (:func:`open_in_work_dir`)."""
    with os.fdopen(open_in_work_dir(path, os.O_WRONLY | os.O_TRUNC), 'w') as f:
        f.write(text)


class WorkDirLock:
    """The exclusive lock of a work dir (see the module docstring).

    Args:
        work_dir: the run's work dir (created if missing).
    """

    def __init__(self, work_dir: str | os.PathLike) -> None:
        self.work_dir = os.fspath(work_dir)
        self.path = os.path.join(self.work_dir, LOCK_FILE)
        self._key = ''
        self.held = False

    def acquire(self) -> WorkDirLock:
        """Take the lock (a no-op when this handle holds it already).

        Raises:
            WorkDirBusyError: naming the work dir and the process that holds it.
            WorkDirError: naming the work dir when it cannot be created or written, or the lock file when it is a
                symbolic link.
        """
        if self.held:
            return self
        try:
            os.makedirs(self.work_dir, exist_ok=True)
        except OSError as e:
            raise WorkDirError(f'cannot create the work dir {self.work_dir}: {e.strerror} ({e.filename})') from None
        if not os.access(self.work_dir, os.W_OK | os.X_OK):
            raise WorkDirError(f'cannot write to the work dir {self.work_dir}: permission denied')
        check_not_a_link(self.path)
        key = os.path.realpath(self.path)
        if key in _HELD:
            _HELD[key][1] += 1
        else:
            # O_RDWR without O_TRUNC: opening must not erase the holder's details before we know we hold the lock
            fd = open_in_work_dir(self.path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise WorkDirBusyError(
                    f'work dir {self.work_dir} is in use by another training run ({holder}); its log and '
                    'checkpoints would be overwritten. Wait for it to finish or stop it, or give this run another '
                    '--work-dir') from None
            except BaseException:
                os.close(fd)
                raise
            info = (f'pid {os.getpid()} on host {socket.gethostname()}, started '
                    f'{time.strftime("%Y-%m-%d %H:%M:%S")}, command: {" ".join(sys.argv) or "python"}\n')
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
            _HELD[key] = [fd, 1]
        self._key = key
        self.held = True
        return self

    def release(self) -> None:
        """Give the lock back (a no-op when this handle does not hold it)."""
        if not self.held:
            return
        self.held = False
        entry = _HELD.get(self._key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[self._key]
            os.close(entry[0])  # closing the last descriptor releases the flock

    def __enter__(self) -> WorkDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode(errors='replace').strip()
    except OSError:
        text = ''
    return text or 'its details are not written yet'


def tidy_work_dir(work_dir: str | os.PathLike, keep_best: str | None = None,
                  logger: logging.Logger | None = None, *, run_id: str | None = None) -> list[str]:
    """Remove what interrupted checkpoint writes left in ``work_dir``; returns the removed paths.

    * every temporary checkpoint file (``.epoch_N.pth.*.tmp``, ``.best_*.pth.*.tmp``): a process killed while
      writing leaves it for good, and it is never a valid checkpoint;
    * when a run resumes (``run_id``, and ``keep_best``: the best checkpoint its checkpoint names, which exists):
      every other ``best_*.pth`` whose ``meta['run_id']`` is ``run_id`` (a kill between writing a new best and
      the epoch checkpoint that names it leaves one).

    Checkpoints of other runs (another ``run_id``, none, or unreadable) are never removed.
    Call it only while holding the work dir's lock: another run could be writing these files.
    """
    work_dir = os.fspath(work_dir)
    if not os.path.isdir(work_dir):
        return []
    names = os.listdir(work_dir)
    removed = [os.path.join(work_dir, n) for n in names if _TMP_CKPT.match(n)]
    if run_id and keep_best and os.path.isfile(keep_best):
        keep = os.path.abspath(keep_best)
        for n in names:
            path = os.path.join(work_dir, n)
            if BEST_CKPT.match(n) and os.path.abspath(path) != keep and \
                    (checkpoint_meta(path) or {}).get('run_id') == run_id:
                removed.append(path)
    for path in removed:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
    if removed and logger is not None:
        logger.warning(f'removed {len(removed)} file(s) left by an interrupted run in {work_dir}: '
                       f'{", ".join(os.path.basename(p) for p in removed)}')
    return removed
