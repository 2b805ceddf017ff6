"""One job per process share of an output directory, at a time.

Process ``K`` of a job holds ``.gte-jax.process-K.lock`` in the output directory
while it runs: an exclusive ``flock`` on the open file, which holds the holder's
pid, host and start time for the message a second job gets. Process 0 and 1 of
one job lock different files; two copies of process 0 lock the same one. The
kernel drops the lock when its process dies (even by SIGKILL), so a lock file
left behind by a crash blocks nothing: the next run locks it again.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket

NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class LockHeld(Exception):
    """Another live process holds the lock; ``holder`` is what it wrote in the lock file."""

    def __init__(self, path: str, holder: dict):
        super().__init__(path)
        self.path = path
        self.holder = holder


def lock_path(out_dir: str, process: int) -> str:
    return os.path.join(out_dir, f".gte-jax.process-{process:05d}.lock")


class OutputLock:
    """An exclusive lock on process ``process``'s share of ``out_dir``: :meth:`acquire`, then :meth:`release`."""

    def __init__(self, out_dir: str, process: int):
        self.path = lock_path(out_dir, process)
        self.supported = True
        """False where the filesystem has no file locks: then nothing stops a second job."""
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        """Takes the lock without waiting and records this process in the lock file.

        Raises:
            LockHeld: another live process holds it.
            OSError: the lock file cannot be created or written (the directory is not writable, or full).
        """
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in NO_LOCKS:
                    self.supported = False  # some network filesystems: run unlocked rather than not at all
                    break
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise LockHeld(self.path, _read_holder(self.path)) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder removed the file between our open and flock: lock the new one
        self._fd = fd
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(holder).encode() + b"\n")
        except OSError:
            self.release()
            raise
        return self

    def release(self) -> None:
        """Removes the lock file and drops the lock (removed while still held, so that a process that opened
        the old file before the removal sees it is gone and locks a new one: see :func:`_same_file`)."""
        with contextlib.suppress(OSError):
            os.remove(self.path)
        assert self._fd is not None, "release() without acquire()"
        os.close(self._fd)
        self._fd = None


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _read_holder(path: str) -> dict:
    """The holder's record, or ``{}`` while it has not written one yet."""
    try:
        with open(path, encoding="utf-8") as f:
            holder = json.load(f)
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}
