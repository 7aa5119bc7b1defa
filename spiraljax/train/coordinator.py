"""The coordination service of a multi-process run, in a process of its own.

``python -m spiraljax.train.coordinator ADDRESS PROCESSES HEARTBEAT_S SHUTDOWN_S LINGER_S`` is started
by process 0 (:func:`spiraljax.train.distributed.initialize`) in place of JAX's in-process service.
It prints ``ready`` once the service listens, then waits for one line on its standard input:
``shutdown`` (process 0 is shutting down normally) ends it at once; end of input without it means
process 0 died, and the service stays up ``LINGER_S`` seconds more, so that the other processes can
still see that process 0 has stopped (and stop themselves) instead of losing the service with it.
"""

from __future__ import annotations

import signal
import sys
import time


def serve(address: str, processes: int, heartbeat_s: int, shutdown_s: int, linger_s: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run decides when the service ends, not Ctrl-C
    try:  # the extension alone: importing jax would add seconds to process 0's start
        from jaxlib import _jax
    except ImportError:
        from jax._src.lib import _jax

    service = _jax.get_distributed_runtime_service(
        address, processes, heartbeat_timeout=heartbeat_s, shutdown_timeout=shutdown_s
    )
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "shutdown":
        time.sleep(linger_s)
    service.shutdown()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
