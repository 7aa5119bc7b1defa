"""An exclusive lock on a run directory, held by the kernel: ``RUN/LOCK`` with the owner's PID.

POSIX: ``fcntl.flock(LOCK_EX | LOCK_NB)`` on an open descriptor of ``LOCK``. Taking the lock is one
atomic system call, so processes started at the same instant can never both hold it, and the kernel
drops it when the descriptor closes — including when the owner dies by SIGKILL or a crash — so a
lock is never stale and nothing ever has to be reclaimed. The PID written into the file after
locking is only read for the error message of a refused second run.

The owner unlinks ``LOCK`` on release while it still holds the lock. A process that opened the old
file just before that unlink could then lock a file nobody else sees; so after locking, the holder
checks that the path still names the file it locked and otherwise retries on the new one.

Windows has no ``fcntl``: ``msvcrt.locking`` on one byte far past the PID takes its place (also
released by the OS when the process dies). That path is not exercised by the test suite.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from spiraljax.errors import LockError

_WINDOWS = sys.platform == "win32"
_LOCK_OFFSET = 1 << 20  # Windows: lock a byte past the PID so other processes can still read it


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock without blocking; False when another open file holds it."""
    try:
        if _WINDOWS:
            import msvcrt

            os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError (POSIX) / PermissionError (Windows): held elsewhere
        return False
    return True


def _unlock(fd: int) -> None:
    if _WINDOWS:
        import msvcrt

        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


def _names_same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _owner_pid(path: Path) -> str:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


class RunLock:
    """Exclusive, kernel-held lock on a run directory (context manager)."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / "LOCK"
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            raise LockError(f"{self.path}: this RunLock is already held")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                os.close(fd)
                pid = _owner_pid(self.path)
                owner = f"running process {pid}" if pid else "another running process"
                raise LockError(f"{self.path.parent}: already in use by {owner} (LOCK)")
            if _names_same_file(fd, self.path):
                break
            os.close(fd)  # we locked a LOCK its previous owner had just removed: try the current one
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if not _WINDOWS:  # unlink while still locked, so the path never names someone else's lock
            self.path.unlink(missing_ok=True)
        try:
            _unlock(fd)
        finally:
            os.close(fd)
        if _WINDOWS:  # an open file cannot be removed on Windows; a later owner may hold it already
            try:
                self.path.unlink()
            except OSError:
                pass

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
