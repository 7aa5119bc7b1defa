#!/usr/bin/env python
"""Spiral attention: dense-masked reference vs sparse shift-and-einsum, forward and forward+backward.

  python benchmarks/spiral_attention.py [--lengths 512 2048 8192] [--sparse-only 32768] [--json]
  python benchmarks/spiral_attention.py --lengths 16 32 64 128 256 --sparse-only --batch 16 --key-mask --repeats 15
  python benchmarks/spiral_attention.py --lengths 1024 4096 --sparse-only --local   # + local attention, same keys/query

Where both run, dense and sparse calls alternate (dense, sparse, dense, …) and the medians are
compared, so machine noise hits both sides; ``--key-mask`` adds a random PAD-key mask ``[B, T]`` as
Spiralformer passes (diagonal kept). The crossover length below which ``auto`` picks ``dense``
(``spiraljax.ops.impl.DENSE_BELOW``) was measured with the second command. ``--local`` adds the fair
sparse baseline: blocked sliding-window attention with as many keys per query as spiral
attention has offsets, timed in the same interleaved rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from common import emit
from spiraljax.ops.attention import local_attention
from spiraljax.ops.spiral import powers_of_two, spiral_attention


def fns(impl: str, offsets, key_mask=None):
    if impl == "local":  # blocked sliding window of w = |offsets| keys per query
        attend = lambda q, k, v: local_attention(q, k, v, len(offsets), impl="blocked")  # noqa: E731
    else:
        attend = lambda q, k, v: spiral_attention(q, k, v, offsets=offsets, key_mask=key_mask, impl=impl)  # noqa: E731
    fwd = jax.jit(attend)
    loss = lambda q, k, v: jnp.sum(attend(q, k, v) ** 2)  # noqa: E731
    bwd = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    return fwd, bwd


def time_interleaved(calls: dict, repeats: int) -> dict:
    """Median seconds per call of each zero-argument callable, the callables alternating (ABAB…, then BABA…)."""
    for fn in calls.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in calls}
    order = list(calls)
    for r in range(repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            jax.block_until_ready(calls[name]())
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def temp_mb(fn, *args) -> float | None:
    """XLA's scratch memory for one compiled call (activations kept for backward included)."""
    try:
        return fn.lower(*args).compile().memory_analysis().temp_size_in_bytes / 2**20
    except Exception:  # not every backend reports it
        return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="*", default=[512, 2048, 8192])
    p.add_argument("--sparse-only", type=int, nargs="*", default=[32768])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--key-mask", action="store_true", help="random PAD-key mask [B, T] (as Spiralformer)")
    p.add_argument("--local", action="store_true", help="also time blocked local attention, w = |offsets|")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = []
    for t in [*args.lengths, *args.sparse_only]:
        shape = (args.batch, t, args.heads, args.head_dim)
        q, k, v = (jax.random.normal(jax.random.key(i), shape) for i in range(3))
        offsets = tuple(powers_of_two(t))
        key_mask = jax.random.bernoulli(jax.random.key(7), 0.9, shape[:2]) if args.key_mask else None
        row = {"T": t, "offsets": len(offsets)}
        impls = ["sparse"] if t in args.sparse_only and t not in args.lengths else ["dense", "sparse"]
        impls += ["local"] if args.local else []
        compiled = {impl: fns(impl, offsets, key_mask) for impl in impls}
        for kind, which in (("fwd", 0), ("fwdbwd", 1)):
            ms = time_interleaved({impl: (lambda f=f[which]: f(q, k, v)) for impl, f in compiled.items()}, args.repeats)
            for impl in impls:
                row[f"{impl}_{kind}_ms"] = ms[impl] * 1e3
        for impl in impls:
            row[f"{impl}_fwdbwd_temp_mb"] = temp_mb(compiled[impl][1], q, k, v)
        if "dense" in impls:
            row["fwd_speedup"] = row["dense_fwd_ms"] / row["sparse_fwd_ms"]
            row["fwdbwd_speedup"] = row["dense_fwdbwd_ms"] / row["sparse_fwdbwd_ms"]
        if "local" in impls:
            row["local_vs_sparse_fwdbwd"] = row["sparse_fwdbwd_ms"] / row["local_fwdbwd_ms"]
        rows.append(row)
    cols = [
        "T",
        "offsets",
        "dense_fwd_ms",
        "sparse_fwd_ms",
        "fwd_speedup",
        "dense_fwdbwd_ms",
        "sparse_fwdbwd_ms",
        "fwdbwd_speedup",
        "dense_fwdbwd_temp_mb",
        "sparse_fwdbwd_temp_mb",
    ]
    if args.local:
        cols += ["local_fwd_ms", "local_fwdbwd_ms", "local_vs_sparse_fwdbwd", "local_fwdbwd_temp_mb"]
    emit(
        rows,
        args.json,
        cols,
        f"spiral attention B={args.batch} H={args.heads} D={args.head_dim}{' key mask' if args.key_mask else ''}",
    )


if __name__ == "__main__":
    main()
