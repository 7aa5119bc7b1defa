#!/usr/bin/env python
"""Spiral attention: dense-masked reference vs sparse shift-and-einsum, forward and forward+backward.

  python benchmarks/spiral_attention.py [--lengths 512 2048 8192] [--sparse-only 32768] [--json]
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from common import emit, time_fn
from spiraljax.ops.spiral import powers_of_two, spiral_attention


def fns(impl: str, offsets):
    fwd = jax.jit(lambda q, k, v: spiral_attention(q, k, v, offsets=offsets, impl=impl))
    loss = lambda q, k, v: jnp.sum(spiral_attention(q, k, v, offsets=offsets, impl=impl) ** 2)  # noqa: E731
    bwd = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    return fwd, bwd


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
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = []
    for t in [*args.lengths, *args.sparse_only]:
        shape = (args.batch, t, args.heads, args.head_dim)
        q, k, v = (jax.random.normal(jax.random.key(i), shape) for i in range(3))
        offsets = tuple(powers_of_two(t))
        row = {"T": t, "offsets": len(offsets)}
        impls = ["sparse"] if t in args.sparse_only and t not in args.lengths else ["dense", "sparse"]
        for impl in impls:
            fwd, bwd = fns(impl, offsets)
            row[f"{impl}_fwd_ms"] = time_fn(lambda: fwd(q, k, v), args.repeats) * 1e3
            row[f"{impl}_fwdbwd_ms"] = time_fn(lambda: bwd(q, k, v), args.repeats) * 1e3
            row[f"{impl}_fwdbwd_temp_mb"] = temp_mb(bwd, q, k, v)
        if "dense" in impls:
            row["fwd_speedup"] = row["dense_fwd_ms"] / row["sparse_fwd_ms"]
            row["fwdbwd_speedup"] = row["dense_fwdbwd_ms"] / row["sparse_fwdbwd_ms"]
        rows.append(row)
    cols = ["T", "offsets", "dense_fwd_ms", "sparse_fwd_ms", "fwd_speedup", "dense_fwdbwd_ms", "sparse_fwdbwd_ms",
            "fwdbwd_speedup", "dense_fwdbwd_temp_mb", "sparse_fwdbwd_temp_mb"]
    emit(rows, args.json, cols, f"spiral attention B={args.batch} H={args.heads} D={args.head_dim}")


if __name__ == "__main__":
    main()
