"""Multi-process (multi-controller) JAX: one process per host, every process runs the same program.

``initialize()`` wraps ``jax.distributed.initialize``. Its three values come from the environment:
``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``;
where they are unset, JAX detects them itself (Cloud TPU, SLURM, Open MPI, Kubernetes). On CPU the
cross-process collectives use gloo.

``launch_local`` starts ``n`` such processes on this machine (127.0.0.1), each with its own forced
CPU devices: the way multi-process training is tested without a cluster
(``python -m spiraljax.launch``).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Sequence

import jax

ENV_COORDINATOR, ENV_PROCESSES, ENV_PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def initialize() -> None:
    """``jax.distributed.initialize`` from the environment (see the module docstring); gloo on CPU.

    Must run before anything touches a JAX device.
    """
    if "cpu" in os.environ.get("JAX_PLATFORMS", "").split(","):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    n, pid = os.environ.get(ENV_PROCESSES), os.environ.get(ENV_PROCESS_ID)
    jax.distributed.initialize(coordinator_address=os.environ.get(ENV_COORDINATOR),
                               num_processes=int(n) if n else None, process_id=int(pid) if pid else None)


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
    env.update({"JAX_PLATFORMS": "cpu", ENV_COORDINATOR: f"127.0.0.1:{port}", ENV_PROCESSES: str(processes),
                ENV_PROCESS_ID: str(process_id),
                "XLA_FLAGS": " ".join(flags + [f"--xla_force_host_platform_device_count={local_devices}"])})
    return env


def launch_local(command: Sequence[str], processes: int = 2, local_devices: int = 2,
                 timeout: float | None = None) -> int:
    """Run ``command`` (e.g. ``[python, train.py, --distributed, ...]``) as ``processes`` local processes.

    Returns the first non-zero exit status (the others are then stopped), else 0.
    """
    port = free_port()
    procs = [subprocess.Popen(list(command), env=local_env(i, processes, local_devices, port))
             for i in range(processes)]
    deadline = None if timeout is None else time.monotonic() + timeout
    status = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed or (deadline is not None and time.monotonic() > deadline):
                status = failed[0] if failed else 124
                break
            time.sleep(0.2)
        else:
            status = next((p.returncode for p in procs if p.returncode), 0)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
    return status


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m spiraljax.launch",
                                description="run a command as N local JAX processes on CPU (multi-process test "
                                            "on one machine), e.g. python -m spiraljax.launch -n 2 -d 2 -- "
                                            "python train.py --distributed --config configs/transformer_tiny.yaml")
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
