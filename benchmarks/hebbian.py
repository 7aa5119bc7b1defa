#!/usr/bin/env python
"""Hebbian fast weights: recurrent scan (reference) vs chunked form, forward and forward+backward.

  python benchmarks/hebbian.py [--lengths 1024 4096 16384] [--chunk 32] [--json]
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from common import emit, time_fn
from spiraljax.ops.hebbian import fast_weights


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="*", default=[1024, 4096, 16384])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--chunk", type=int, default=32)  # fastest here at T 4096 (with 2 chunks per loop iteration)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = []
    for t in args.lengths:
        shape = (args.batch, t, args.heads, args.head_dim)
        q, k, v = (jax.random.normal(jax.random.key(i), shape) * 0.1 for i in range(3))
        g = jnp.log(jnp.full((args.heads,), 0.99))
        row = {"T": t}
        for impl in ("scan", "chunked"):
            fwd = jax.jit(lambda q, k, v, impl=impl: fast_weights(q, k, v, g, impl=impl, chunk=args.chunk)[0])
            loss = lambda q, k, v, impl=impl: jnp.sum(fast_weights(q, k, v, g, impl=impl, chunk=args.chunk)[0] ** 2)  # noqa: E731
            bwd = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
            row[f"{impl}_fwd_ms"] = time_fn(lambda: fwd(q, k, v), args.repeats) * 1e3
            row[f"{impl}_fwdbwd_ms"] = time_fn(lambda: bwd(q, k, v), args.repeats) * 1e3
        row["fwd_speedup"] = row["scan_fwd_ms"] / row["chunked_fwd_ms"]
        row["fwdbwd_speedup"] = row["scan_fwdbwd_ms"] / row["chunked_fwdbwd_ms"]
        rows.append(row)
    emit(rows, args.json, ["T", "scan_fwd_ms", "chunked_fwd_ms", "fwd_speedup", "scan_fwdbwd_ms",
                           "chunked_fwdbwd_ms", "fwdbwd_speedup"],
         f"hebbian fast weights B={args.batch} H={args.heads} D={args.head_dim} chunk={args.chunk}")


if __name__ == "__main__":
    main()
