"""Multi-process (multi-controller) JAX: one process per host, every process runs the same program.

``initialize()`` wraps ``jax.distributed.initialize``. Its three values come from the environment:
``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``;
where they are unset, JAX detects them itself (Cloud TPU, SLURM, Open MPI, Kubernetes). On CPU the
cross-process collectives use gloo. Beyond JAX's own set-up it makes a run behave:

* **Only process 0 speaks.** The other processes' standard output goes to ``/dev/null`` (their
  standard error stays: a failure is reported by the process it happens in, naming it), and Gloo's
  "[Gloo] Rank … is connected to … peer ranks" notices are dropped from process 0's.
* **A lost peer stops the run in bounded time, with one line.** Each process publishes a counter in
  the coordination service's key-value store every second (:class:`PeerWatch`); a peer whose counter
  has not moved for ``SPIRALJAX_PEER_TIMEOUT_S`` seconds (default :data:`DEFAULT_PEER_TIMEOUT_S`)
  is lost: ``error: lost process 1 of 2 (no sign of life for 30 s); process 0 stops`` and exit
  status :data:`PEER_LOST_EXIT`. A collective that fails at once (Gloo: "Connection closed by peer")
  waits for that verdict instead of printing a traceback. JAX's own heartbeat timeout is set well
  above it (``4 × timeout + 30`` s), since JAX ends a process with ``abort()`` and a C++ stack trace.
* **The coordination service runs in a process of its own** (:mod:`spiraljax.train.coordinator`,
  started by process 0), so killing process 0 does not take the service down with it: in JAX's
  default set-up the others then abort at once. The service process ends when process 0 shuts down,
  or lingers ``timeout + 15`` s after process 0 died so that the others can see it and stop.

``launch_local`` starts ``n`` such processes on this machine (127.0.0.1), each with its own forced
CPU devices: the way multi-process training is tested without a cluster
(``python -m spiraljax.launch``). It shows process 0's output, and a failure of another process
once, naming it; when one process fails it stops the others.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator, Sequence

import jax

ENV_COORDINATOR, ENV_PROCESSES, ENV_PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"
ENV_PEER_TIMEOUT = "SPIRALJAX_PEER_TIMEOUT_S"
DEFAULT_PEER_TIMEOUT_S = 30.0
PEER_LOST_EXIT = 75  # EX_TEMPFAIL: a peer process was lost or failed; the run can be resumed
GLOO_NOTICE = b"[Gloo] Rank "


def peer_timeout() -> float:
    """Seconds without a sign of life after which a peer process counts as lost."""
    try:
        return max(float(os.environ.get(ENV_PEER_TIMEOUT, DEFAULT_PEER_TIMEOUT_S)), 1.0)
    except ValueError:
        return DEFAULT_PEER_TIMEOUT_S


def initialize() -> None:
    """``jax.distributed.initialize`` from the environment (see the module docstring); gloo on CPU;
    then quiet followers, filtered Gloo notices and the peer watch.

    Must run before anything touches a JAX device.
    """
    if "cpu" in os.environ.get("JAX_PLATFORMS", "").split(","):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    n, pid = os.environ.get(ENV_PROCESSES), os.environ.get(ENV_PROCESS_ID)
    timeout = peer_timeout()
    with _service_in_own_process(timeout):
        jax.distributed.initialize(
            coordinator_address=os.environ.get(ENV_COORDINATOR),
            num_processes=int(n) if n else None,
            process_id=int(pid) if pid else None,
            heartbeat_timeout_seconds=int(4 * timeout + 30),
        )
    state = _jax_state()
    if state.num_processes > 1:
        _quiet_stdout(primary=state.process_id == 0)
        global WATCH
        WATCH = PeerWatch(state.client, state.process_id, state.num_processes, timeout)
        WATCH.start()
        atexit.register(WATCH.finish)  # a normal exit that did not call finish(): done (see finish)


def _jax_state():
    from jax._src import distributed as jax_distributed

    return jax_distributed.global_state


# ----------------------------------------------------------------------------- the service process
class _ServiceProcess:
    """Stands in for JAX's in-process coordination service: the service runs in a child process."""

    def __init__(self, address: str, processes: int, heartbeat: int, shutdown: int, linger: float):
        cmd = [
            sys.executable,
            "-m",
            "spiraljax.train.coordinator",
            address,
            str(processes),
            str(heartbeat),
            str(shutdown),
            str(linger),
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
        )  # no Ctrl-C from the terminal
        ready = self.proc.stdout.readline().strip()
        if ready != "ready":
            self.proc.kill()
            raise RuntimeError(f"the coordination service did not start on {address} ({ready or 'no reply'})")

    def shutdown(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("shutdown\n")
                self.proc.stdin.flush()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@contextlib.contextmanager
def _service_in_own_process(timeout: float) -> Iterator[None]:
    """While JAX initializes, process 0's coordination service is started as :class:`_ServiceProcess`
    (JAX creates it through ``_jax.get_distributed_runtime_service``; nothing else changes). A JAX
    without that function keeps its in-process service."""
    try:
        from jax._src.lib import _jax

        original = _jax.get_distributed_runtime_service
    except (ImportError, AttributeError):
        yield
        return

    def start(address, num_nodes, heartbeat_timeout=None, shutdown_timeout=None, **_):
        return _ServiceProcess(address, num_nodes, heartbeat_timeout or 100, shutdown_timeout or 300, timeout + 15)

    _jax.get_distributed_runtime_service = start
    try:
        yield
    finally:
        _jax.get_distributed_runtime_service = original


# ----------------------------------------------------------------------------- output
class _DropLines:
    """File descriptor ``fd`` through a pipe whose reader thread forwards every line except those
    starting with ``prefix`` (C++ libraries write to the descriptor directly)."""

    def __init__(self, fd: int, prefix: bytes):
        self.fd, self.prefix = fd, prefix
        self.target = os.dup(fd)
        read, write = os.pipe()
        os.dup2(write, fd)
        os.close(write)
        self.thread = threading.Thread(target=self._pump, args=(read,), daemon=True, name="drop-lines")
        self.thread.start()

    def _pump(self, read: int) -> None:
        with os.fdopen(read, "rb") as src:
            for line in src:
                if not line.startswith(self.prefix):
                    os.write(self.target, line)

    def close(self) -> None:
        """Flush, restore the descriptor and wait until everything written has been forwarded."""
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os.dup2(self.target, self.fd)  # the pipe's last write end closes: the pump reads to its end
        self.thread.join(timeout=5)


_STDOUT_FILTER: _DropLines | None = None


def _quiet_stdout(primary: bool) -> None:
    """Process 0: Gloo's connection notices dropped from its standard output; others: no standard output."""
    global _STDOUT_FILTER
    sys.stdout.flush()
    if primary:
        _STDOUT_FILTER = _DropLines(1, GLOO_NOTICE)
        atexit.register(flush_output)
    else:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)


def flush_output() -> None:
    """Everything this process printed is out (before ``os._exit``, which skips Python's clean-up)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    if _STDOUT_FILTER is not None:
        _STDOUT_FILTER.close()


# ----------------------------------------------------------------------------- the peer watch
class PeerWatch:
    """Signs of life between the processes of a run, through the coordination service's key-value store.

    Every ``interval`` seconds this process writes a counter under ``spiraljax/alive/<id>`` and reads
    the others'. A peer whose value has not changed for ``timeout`` seconds is lost; a peer that wrote
    ``failed`` has failed (it reports its own error). Either way this process prints one line and
    ends with :data:`PEER_LOST_EXIT` (``os._exit``: the collectives and barriers it may be blocked in
    would never return). :meth:`finish` (value ``done``) ends the watch on a normal exit.
    """

    KEY = "spiraljax/alive/"

    def __init__(
        self,
        client,
        me: int,
        processes: int,
        timeout: float,
        interval: float = 1.0,
        on_lost: Callable[[str], None] | None = None,
    ):
        self.client, self.me, self.n, self.timeout, self.interval = client, me, processes, timeout, interval
        self.on_lost = on_lost or _stop_process
        self._stop = threading.Event()
        self.verdict: str | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="peer-watch")

    def start(self) -> None:
        self.thread.start()

    def _publish(self, value: str) -> None:
        self.client.key_value_set(f"{self.KEY}{self.me}", value, allow_overwrite=True)

    def _run(self) -> None:
        peers = [i for i in range(self.n) if i != self.me]
        seen: dict[int, tuple[str | None, float]] = {i: (None, time.monotonic()) for i in peers}
        service_ok = time.monotonic()
        count = 0
        while not self._stop.wait(self.interval if count else 0):
            count += 1
            now = time.monotonic()
            try:
                self._publish(str(count))
                values = {}
                for i in peers:
                    try:
                        values[i] = self.client.key_value_try_get(f"{self.KEY}{i}")
                    except Exception:  # not written yet (NOT_FOUND)
                        values[i] = None
                service_ok = now
            except Exception:  # the coordination service itself is unreachable
                if now - service_ok > self.timeout:
                    return self._lost(f"lost the coordination service (unreachable for {self.timeout:g} s)")
                continue
            for i in list(peers):
                value = values[i]
                if value == "done":
                    peers.remove(i)
                elif value == "failed":
                    return self._lost(f"process {i} of {self.n} failed (see its output)")
                elif value != seen[i][0]:
                    seen[i] = (value, now)
                elif now - seen[i][1] > self.timeout:
                    return self._lost(f"lost process {i} of {self.n} (no sign of life for {self.timeout:g} s)")

    def _lost(self, why: str) -> None:
        self.verdict = why
        self.on_lost(
            f"error: {why}; process {self.me} stops (exit status {PEER_LOST_EXIT}); resume the run with --resume"
        )

    def finish(self, failed: bool = False) -> None:
        """Stop watching; tell the peers this process ended normally (``done``) or ``failed``. Only
        the first call counts. Waits for the watch thread to leave the client: a thread still inside
        a C++ call when the interpreter finalizes is ended by ``pthread_exit``, which aborts the process
        ("FATAL: exception not rethrown")."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self._publish("failed" if failed else "done")

    def wait_for_verdict(self, seconds: float) -> str | None:
        """Wait up to ``seconds`` for the watch to find a lost or failed peer (it then ends the process)."""
        self.thread.join(timeout=seconds)
        return self.verdict


def _stop_process(line: str) -> None:
    print(line, file=sys.stderr)
    flush_output()
    os._exit(PEER_LOST_EXIT)


WATCH: PeerWatch | None = None


def finish(failed: bool = False) -> None:
    """End this process's part in the run: peers stop watching it (see :class:`PeerWatch`)."""
    if WATCH is not None:
        WATCH.finish(failed)
    flush_output()


def peer_failure(err: BaseException) -> None:
    """Called with an unexpected exception in a multi-process run: when a peer is lost (a failed
    collective usually means that), wait for :class:`PeerWatch`'s verdict, which ends the process
    with one line. Returns when no peer is lost (the exception is this process's own)."""
    if WATCH is not None:
        WATCH.wait_for_verdict(WATCH.timeout + 2 * WATCH.interval + 1)


def is_primary() -> bool:
    """True in process 0, the one that writes run files (metrics, config, plots, samples)."""
    return jax.process_index() == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_env(process_id: int, processes: int, local_devices: int, port: int) -> dict[str, str]:
    """The environment of local process ``process_id``: CPU, ``local_devices`` forced host devices."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env.update(
        {
            "JAX_PLATFORMS": "cpu",
            ENV_COORDINATOR: f"127.0.0.1:{port}",
            ENV_PROCESSES: str(processes),
            ENV_PROCESS_ID: str(process_id),
            "XLA_FLAGS": " ".join(flags + [f"--xla_force_host_platform_device_count={local_devices}"]),
        }
    )
    return env


def launch_local(
    command: Sequence[str], processes: int = 2, local_devices: int = 2, timeout: float | None = None
) -> int:
    """Run ``command`` (e.g. ``[python, train.py, --distributed, ...]``) as ``processes`` local processes.

    Process 0's output is shown as it comes; the others' standard output is dropped and their
    standard error kept until they end. When a process fails, the others are stopped (SIGKILL: they
    could only wait for it) and the failure is reported once: process 0's own error as it printed it,
    another process's standard error (its error line names it) or one line with its exit status.
    Ctrl-C is passed on to every process (they stop together at a checkpoint); a second one stops them.

    Returns the first non-zero exit status, 124 on ``timeout``, else 0.
    """
    port = free_port()
    procs = [
        subprocess.Popen(
            list(command),
            env=local_env(i, processes, local_devices, port),
            stdout=None if i == 0 else subprocess.DEVNULL,
            stderr=None if i == 0 else subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    errors: dict[int, list[str]] = {i: [] for i in range(1, processes)}
    readers = [
        threading.Thread(target=lambda p=procs[i], out=errors[i]: out.extend(p.stderr), daemon=True) for i in errors
    ]
    for r in readers:
        r.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    failed: int | None = None
    status = 0
    interrupted = False
    try:
        while [p.poll() for p in procs].count(None):  # poll every process (any() would stop at the first)
            try:
                bad = [i for i, p in enumerate(procs) if p.returncode not in (None, 0)]
                if bad:
                    failed, status = bad[0], procs[bad[0]].returncode
                    break
                if deadline is not None and time.monotonic() > deadline:
                    status = 124
                    break
                time.sleep(0.1)
            except KeyboardInterrupt:
                if interrupted:
                    raise
                interrupted = True
                for p in procs:
                    if p.poll() is None:
                        p.send_signal(signal.SIGINT)
        else:
            failed = next((i for i, p in enumerate(procs) if p.returncode), None)
            status = procs[failed].returncode if failed is not None else 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()
        for r in readers:
            r.join(timeout=5)
    if status == 124 and failed is None:
        print(f"error: timed out after {timeout:.0f} s; stopped all {processes} processes", file=sys.stderr)
    elif failed is not None:
        report_failure(failed, processes, procs[failed].returncode, errors.get(failed))
    return status if status >= 0 else 128 - status


def report_failure(index: int, processes: int, code: int, stderr: list[str] | None) -> None:
    """One report of a failed process: its own standard error when it said something (process 0's
    is already on screen), else a line with its exit status or signal."""
    if stderr:
        named = any(line.startswith(f"error: process {index} of ") for line in stderr)
        if not named:
            print(f"error: process {index} of {processes} failed (exit status {code}):", file=sys.stderr)
        sys.stderr.write("".join(stderr[-40:]))
        return
    if index == 0 and code > 0:
        return  # process 0 printed its own error
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    print(f"error: process {index} of {processes} {how}; stopped the others", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m spiraljax.launch",
        description="run a command as N local JAX processes on CPU (multi-process test "
        "on one machine), e.g. python -m spiraljax.launch -n 2 -d 2 -- "
        "python train.py --distributed --config configs/transformer_tiny.yaml",
    )
    p.add_argument("-n", "--processes", type=int, default=2, help="number of processes (default 2)")
    p.add_argument("-d", "--local-devices", type=int, default=2, help="CPU devices per process (default 2)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command each process runs (after --)")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command given (e.g. -- python train.py --distributed --config ...)")
    if args.processes < 1 or args.local_devices < 1:
        p.error("--processes and --local-devices must be positive")
    return launch_local(command, args.processes, args.local_devices)


if __name__ == "__main__":
    sys.exit(main())
