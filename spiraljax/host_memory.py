"""Reuse freed host memory between steps on the CPU (glibc), called by the entry points.

XLA's CPU runtime allocates each execution's scratch buffer (every intermediate of a train step:
358 MiB for ``transformer_tiny`` at 32 × 128) with ``malloc`` and frees it when the step ends. glibc
serves a block that large with a fresh ``mmap`` and returns it with ``munmap``, so every step
page-faults its whole scratch in again and the kernel zeroes it: ≈ 100k page faults per dense-baseline
step, over a third of its time (docs/benchmarks.md, "Host-memory reuse"). :func:`reuse_host_memory` keeps it:

* ``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, -1)``: large blocks come from the heap and
  freed memory stays with the process (its resident size stays at its peak instead of dropping
  between steps). The heap may take a few steps to settle: a freed scratch next to a live buffer can
  be too small for the next aligned request, so it grows by a scratch or a few until neighbouring
  holes merge (a 64 MiB probe: 2-6 faulting calls, in one run of 25 as late as call 25; the
  ``transformer_tiny`` step: at once, resident size 860-880 MiB either way);
* ``jax_cpu_enable_async_dispatch = False``: a computation on a single CPU device then runs in the
  calling thread, whose allocations come from glibc's main arena, the one these settings govern (the
  arenas of other threads ``mmap`` large blocks whatever they say). A multi-device computation still
  runs on XLA's threads, so there the settings neither help nor hurt.

Numbers do not change (same programs, same order of operations); only where memory comes from.
Opt out with ``SPIRALJAX_REUSE_HOST_MEMORY=0``. Importing spiraljax does not call this: ``train.py``,
``evaluate.py``, the report and the benchmarks do; a notebook may call it before its first JAX
computation.
"""

from __future__ import annotations

import ctypes
import os
import platform

ENV_SWITCH = "SPIRALJAX_REUSE_HOST_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _backend_started() -> bool:
    try:
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:  # a JAX without it: assume the worst, settings might not reach the client
        return True
    return backends_are_initialized()


def reuse_host_memory() -> bool:
    """Apply the settings above; True if applied. Does nothing (False) off Linux/glibc, when
    ``SPIRALJAX_REUSE_HOST_MEMORY=0``, once JAX's backend has started (the dispatch mode is fixed
    when the CPU client is created, so it must run before the first JAX computation), or with a JAX
    that no longer has the dispatch option (without it the malloc settings would not reach the step)."""
    libc = _glibc()
    if libc is None or os.environ.get(ENV_SWITCH, "1") == "0" or _backend_started():
        return False
    import jax

    try:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    except AttributeError:  # "Unrecognized config option"
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, -1))
