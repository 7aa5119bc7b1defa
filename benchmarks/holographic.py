#!/usr/bin/env python
"""Holographic memory throughput and toroidal attention scaling (O(n) running sums vs O(n²) reference).

  python benchmarks/holographic.py [--json]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from common import emit, time_fn  # noqa: E402
from spiraljax import config  # noqa: E402
from spiraljax.models import holographic as H  # noqa: E402
from spiraljax.ops.toroidal import satellite_phases, toroidal_attention, toroidal_attention_reference  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="*", default=[256, 4096, 65536])
    p.add_argument("--lengths", type=int, nargs="*", default=[10, 100, 1000, 10_000, 100_000])
    p.add_argument("--quadratic-max", type=int, default=16_384)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    cfg = config.load(config.PROJECT_ROOT / "configs" / "holographic.yaml").model
    learn = jax.jit(H.learn, static_argnums=3)
    retrieve = jax.jit(H.retrieve, static_argnums=2)
    rows = []
    for b in args.batches:
        ctx = jax.random.randint(jax.random.key(0), (b, cfg.context_len), 0, cfg.vocab_size)
        tgt = jax.random.randint(jax.random.key(1), (b,), 0, cfg.vocab_size)
        state = H.init(cfg)
        t_learn = time_fn(lambda: learn(state, ctx, tgt, cfg.capacity)["memory"], repeats=3)
        learned = learn(state, ctx, tgt, cfg.capacity)
        t_ret = time_fn(lambda: retrieve(learned, ctx, cfg.capacity)[0], repeats=3)
        rows.append({"batch": b, "learn_items_per_s": b / t_learn, "retrieve_items_per_s": b / t_ret})
    emit(rows, args.json, ["batch", "learn_items_per_s", "retrieve_items_per_s"], "holographic learn/retrieve")
    rows = []
    lin = jax.jit(toroidal_attention)
    quad = jax.jit(toroidal_attention_reference)
    for n in args.lengths:
        v = jax.random.normal(jax.random.key(2), (n, 16))
        theta = satellite_phases(n)
        row = {"n": n, "linear_ms": time_fn(lambda: lin(v, theta), repeats=3) * 1e3}
        if n <= args.quadratic_max:
            row["quadratic_ms"] = time_fn(lambda: quad(v, theta), repeats=3) * 1e3
            row["speedup"] = row["quadratic_ms"] / row["linear_ms"]
        rows.append(row)
    big = [r for r in rows if r["n"] >= 1000]
    if len(big) >= 2:  # log-log slope of the O(n) form over the large sizes
        slope = np.polyfit(np.log([r["n"] for r in big]), np.log([r["linear_ms"] for r in big]), 1)[0]
        for r in rows:
            r["linear_scaling_exponent"] = float(slope)
    emit(rows, args.json, ["n", "linear_ms", "quadratic_ms", "speedup", "linear_scaling_exponent"],
         "toroidal attention, 16 satellites, d=16")


if __name__ == "__main__":
    main()
