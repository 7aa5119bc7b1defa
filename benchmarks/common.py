"""Timing helpers for the benchmark scripts: warm up (compile), then median wall time of N runs.

Importing this module applies :func:`spiraljax.host_memory.reuse_host_memory` (as ``train.py`` does), so
benchmarks time what training runs; ``SPIRALJAX_REUSE_HOST_MEMORY=0`` times glibc's default instead.
Import it before the first JAX computation.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any, Callable

import jax

from spiraljax.host_memory import reuse_host_memory
from spiraljax.runinfo import host_cpu

HOST_MEMORY_REUSED = reuse_host_memory()


def time_fn(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median seconds per call of ``fn`` (results blocked on), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def emit(rows: list[dict], as_json: bool, columns: list[str], title: str) -> None:
    """Print rows as an aligned table (or JSON with --json)."""
    if as_json:
        print(
            json.dumps(
                {
                    "benchmark": title,
                    "device": str(jax.devices()[0].platform),
                    "host_cpu": host_cpu(),
                    "host_memory_reuse": HOST_MEMORY_REUSED,
                    "rows": rows,
                },
                indent=2,
            )
        )
        return
    reuse = "on" if HOST_MEMORY_REUSED else "off"
    device = f"device: {jax.devices()[0].platform}, {jax.device_count()} device(s), CPU: {host_cpu()}"
    print(f"# {title}  ({device}, host memory reuse {reuse})")
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(w) for c, w in zip(columns, widths)))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) >= 1 else f"{v:.4f}"
    return str(v)
