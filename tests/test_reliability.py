"""No lost work, no confusing state (issue 12): the run lock, resume compatibility, corrupt
checkpoints moved aside, one-line errors, no leftovers, glyph prompts, bits per glyph."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT, subprocess_env
from spiraljax.train.lock import LockError, RunLock

# ----------------------------------------------------------------------------- the run lock

_LOCK_WORKER = textwrap.dedent(f"""
    import os, sys, time
    sys.path.insert(0, {str(ROOT)!r})
    from spiraljax.train.lock import LockError, RunLock
    gate, base, trials = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for t in range(trials):
        os.read(gate, 1)                       # the barrier: the parent writes every gate at once
        lock = RunLock(f"{{base}}/t{{t}}")
        try:
            lock.acquire()
        except LockError:
            print(t, "refused", flush=True)
            continue
        t0 = time.monotonic()
        time.sleep(0.03)
        t1 = time.monotonic()
        lock.release()
        print(t, "held", t0, t1, flush=True)
""")


def test_lock_never_has_two_holders(tmp_path):
    """6 processes try to take the same lock at the same instant, 50 times: the intervals in which
    they hold it never overlap (the old create-then-write-PID lock gave two holders in ~1 of 4)."""
    n_workers, trials = 6, 50
    gates = [os.pipe() for _ in range(n_workers)]
    workers = [subprocess.Popen([sys.executable, "-c", _LOCK_WORKER, str(r), str(tmp_path), str(trials)],
                                pass_fds=(r,), stdout=subprocess.PIPE, text=True) for r, _ in gates]
    try:
        overlaps = []
        for t in range(trials):
            for _, w in gates:
                os.write(w, b"x")
            lines = [w.stdout.readline().split() for w in workers]
            assert all(line and int(line[0]) == t for line in lines), lines
            held = sorted((float(a), float(b)) for _, kind, *ab in lines if kind == "held" for a, b in [ab])
            assert held, f"trial {t}: nobody got the lock"
            overlaps += [t for (a0, a1), (b0, b1) in zip(held, held[1:]) if b0 < a1]
        assert not overlaps, f"two simultaneous holders in trials {overlaps}"
    finally:
        for w in workers:
            w.kill()
            w.wait()
        for r, w in gates:
            os.close(r)
            os.close(w)


_HOLDER = textwrap.dedent(f"""
    import sys, time
    sys.path.insert(0, {str(ROOT)!r})
    from spiraljax.train.lock import RunLock
    RunLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def test_lock_refuses_while_held_and_is_free_once_the_holder_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockError, match=f"already in use by running process {holder.pid} "):
            RunLock(tmp_path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        holder.kill()
    assert (tmp_path / "LOCK").read_text() == str(holder.pid)   # a SIGKILL leaves the file behind...
    with RunLock(tmp_path):                                      # ...but the kernel already freed the lock
        assert (tmp_path / "LOCK").read_text() == str(os.getpid())
    assert not (tmp_path / "LOCK").exists()


def test_leftover_lock_file_with_a_live_pid_does_not_block(tmp_path):
    """A LOCK left by a dead run whose PID now belongs to a live process (PID reuse; pid 1 is always
    alive) used to refuse every later run; only a held lock refuses now."""
    (tmp_path / "LOCK").write_text("1")
    with RunLock(tmp_path) as lock:
        assert lock.held
        with pytest.raises(LockError, match=f"running process {os.getpid()}"):
            RunLock(tmp_path).acquire()   # a second open file in the same process is refused too
