#!/usr/bin/env python
"""Kuramoto oscillators: O(N²) pairwise vs O(N) mean-field coupling step, and scan throughput.

  python benchmarks/kuramoto_scan.py [--oscillators 128 512 2048] [--lengths 1024 4096] [--json]

Part 1 times one coupling evaluation Σ_j sin(θ_j − θ_i) for a batch of phase vectors, both forms
side by side. Part 2 times the sequence scan (forward, and forward+backward with and without
``remat_chunk``) for N oscillators and reports tokens/s (tokens = batch × T).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from common import emit, time_fn
from spiraljax.ops.kuramoto import coupling_meanfield, coupling_pairwise, kuramoto_scan


def coupling_rows(oscillators: list[int], batch: int, repeats: int) -> list[dict]:
    rows = []
    for n in oscillators:
        theta = jax.random.uniform(jax.random.key(0), (batch, n), maxval=6.28)
        pair, mean = jax.jit(coupling_pairwise), jax.jit(coupling_meanfield)
        row = {
            "N": n,
            "pairwise_ms": time_fn(lambda: pair(theta), repeats) * 1e3,
            "meanfield_ms": time_fn(lambda: mean(theta), repeats) * 1e3,
        }
        row["speedup"] = row["pairwise_ms"] / row["meanfield_ms"]
        rows.append(row)
    return rows


def scan_rows(n: int, lengths: list[int], batch: int, chunk: int, repeats: int) -> list[dict]:
    rows = []
    for t in lengths:
        omega = 0.3 * jax.random.normal(jax.random.key(1), (batch, t, n))
        coupling = jnp.ones((batch, t))
        theta0 = jnp.zeros((batch, n))
        row = {"N": n, "T": t, "batch": batch}
        fwd = jax.jit(lambda om: kuramoto_scan(theta0, om, coupling, 0.1, unroll=4)[0])
        row["fwd_ms"] = time_fn(lambda: fwd(omega), repeats) * 1e3
        for name, c in (("fwdbwd_ms", None), (f"fwdbwd_remat{chunk}_ms", chunk)):
            loss = lambda om, c=c: jnp.sum(  # noqa: E731
                jnp.cos(kuramoto_scan(theta0, om, coupling, 0.1, unroll=4, remat_chunk=c)[0])
            )
            grad = jax.jit(jax.grad(loss))
            row[name] = time_fn(lambda: grad(omega), repeats) * 1e3
        row["fwd_tokens_per_s"] = batch * t / (row["fwd_ms"] / 1e3)
        row["fwdbwd_tokens_per_s"] = batch * t / (row["fwdbwd_ms"] / 1e3)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--oscillators", type=int, nargs="*", default=[128, 512, 2048])
    p.add_argument("--scan-oscillators", type=int, default=128)
    p.add_argument("--lengths", type=int, nargs="*", default=[1024, 4096])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--chunk", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    emit(
        coupling_rows(args.oscillators, args.batch * 128, args.repeats),
        args.json,
        ["N", "pairwise_ms", "meanfield_ms", "speedup"],
        f"kuramoto coupling step, {args.batch * 128} phase vectors",
    )
    emit(
        scan_rows(args.scan_oscillators, args.lengths, args.batch, args.chunk, args.repeats),
        args.json,
        [
            "N",
            "T",
            "batch",
            "fwd_ms",
            "fwdbwd_ms",
            f"fwdbwd_remat{args.chunk}_ms",
            "fwd_tokens_per_s",
            "fwdbwd_tokens_per_s",
        ],
        "kuramoto sequence scan",
    )


if __name__ == "__main__":
    main()
