#!/usr/bin/env python
"""Holographic memory throughput, dream time, and toroidal attention scaling (O(n) vs O(n²) reference).

  python benchmarks/holographic.py [--json]

learn/retrieve use configs/holographic.yaml (general mode: learn also fills the binding registry;
retrieve of a stored context reads its slot, of a context with one token changed attends over the
registry by similarity — one [batch, registry] similarity block per 1024 queries). The dream is timed on
a store of ``--dream-items`` random contexts in a normal and an overloaded (4 per slot) hash table.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from common import emit, time_fn
from spiraljax import config
from spiraljax import holographic as H
from spiraljax.ops.toroidal import satellite_phases, toroidal_attention, toroidal_attention_reference


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="*", default=[256, 4096, 65536])
    p.add_argument("--lengths", type=int, nargs="*", default=[10, 100, 1000, 10_000, 100_000])
    p.add_argument("--quadratic-max", type=int, default=16_384)
    p.add_argument("--dream-items", type=int, default=2000)
    p.add_argument("--similarity-max", type=int, default=4096, help="largest batch timed on changed contexts")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    cfg = config.load(config.PROJECT_ROOT / "configs" / "holographic.yaml").model
    learn = jax.jit(H.learn, static_argnums=3)
    retrieve = jax.jit(H.retrieve, static_argnums=2)
    rows = []
    for b in args.batches:
        ctx = jax.random.randint(jax.random.key(0), (b, cfg.context_len), 0, cfg.vocab_size)
        tgt = jax.random.randint(jax.random.key(1), (b,), 0, cfg.vocab_size)
        changed = ctx.at[:, 1].set((ctx[:, 1] + 1) % cfg.vocab_size)  # middle token changed: not stored
        # a registry with a row for every context (the config's 32768 rows, or more for bigger batches)
        state = H.init(cfg.model_copy(update={"episodes": max(cfg.episodes, 1 << (b - 1).bit_length())}))
        t_learn = time_fn(lambda: learn(state, ctx, tgt, cfg.capacity)["memory"], repeats=3)
        learned = learn(state, ctx, tgt, cfg.capacity)
        t_ret = time_fn(lambda: retrieve(learned, ctx, cfg.capacity)[0], repeats=3)
        row = {
            "batch": b,
            "registry_rows": int(learned["ep_ctx"].shape[0]),
            "learn_items_per_s": b / t_learn,
            "retrieve_items_per_s": b / t_ret,
        }
        if b <= args.similarity_max:
            row["retrieve_changed_items_per_s"] = b / time_fn(
                lambda: retrieve(learned, changed, cfg.capacity)[0], repeats=3
            )
        rows.append(row)
    emit(
        rows,
        args.json,
        ["batch", "registry_rows", "learn_items_per_s", "retrieve_items_per_s", "retrieve_changed_items_per_s"],
        "holographic learn/retrieve (general mode)",
    )
    rows = []
    n = args.dream_items
    ctx = jax.random.randint(jax.random.key(3), (n, cfg.context_len), 0, cfg.vocab_size)
    tgt = jax.random.randint(jax.random.key(4), (n,), 0, cfg.vocab_size)
    for regime, cap in (("normal", cfg.capacity), ("overloaded", n // 4)):
        dcfg = cfg.model_copy(update={"capacity": cap, "episodes": max(1024, 1 << (2 * n - 1).bit_length())})
        state = learn(H.init(dcfg), ctx, tgt, cap)
        stats = H.dream(state, jax.random.key(0))[1]
        t_dream = time_fn(lambda: H.dream(state, jax.random.key(0))[0]["consolidation"], repeats=3)
        rows.append(
            {
                "store": regime,
                "items": n,
                "slots": cap,
                "registry_rows": dcfg.episodes,
                "iterations": int(stats["iterations"]),
                "dream_s": t_dream,
            }
        )
    emit(rows, args.json, ["store", "items", "slots", "registry_rows", "iterations", "dream_s"], "holographic dream")
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
    emit(
        rows,
        args.json,
        ["n", "linear_ms", "quadratic_ms", "speedup", "linear_scaling_exponent"],
        "toroidal attention, 16 satellites, d=16",
    )


if __name__ == "__main__":
    main()
