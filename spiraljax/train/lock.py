"""A ``LOCK`` file holding the PID of the run that owns a directory."""
from __future__ import annotations

import os
from pathlib import Path


class LockError(RuntimeError):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive lock on a run directory; a stale lock (dead PID) is reclaimed."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / "LOCK"

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or "0")
                except (ValueError, OSError):
                    pid = 0
                if pid and pid != os.getpid() and _alive(pid):
                    raise LockError(f"{self.path.parent}: already in use by running process {pid} (LOCK)") from None
                self.path.unlink(missing_ok=True)  # stale: its owner is dead
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self
        raise LockError(f"{self.path}: could not acquire lock")

    def release(self) -> None:
        try:
            if self.path.read_text().strip() == str(os.getpid()):
                self.path.unlink()
        except OSError:
            pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
