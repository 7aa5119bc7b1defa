#!/usr/bin/env python
"""Where a multi-process CPU run spends its time: 2 processes × 2 devices against 1 process × 4 devices.

  python benchmarks/multiprocess.py                      # transformer_tiny as configured, fsdp 2, 3 rounds
  python benchmarks/multiprocess.py --small --steps 30   # the tests' tiny size (latency-bound: collectives dominate)

Each layout runs in fresh processes (the 2 × 2 one through ``spiraljax.launch``), alternated 1 × 4 /
2 × 2 for ``--rounds`` rounds so that both see the same machine load; medians over rounds. Per layout:

* ``init``: ``jax.distributed.initialize`` (0 for one process); ``prepare``: data, model, mesh;
* ``compile``: lowering and compiling the train step;
* ``step``: wall ms per step over ``--steps`` steps dispatched back to back (as the loop does),
  ``cpu``: the process's CPU ms per step in that stretch (process 0; user + system, all threads);
* ``allreduce``: one all-reduce of a parameter-sized tree over the 4 devices (the data-parallel
  gradient sum), ms;
* ``wait``: ``step`` − ``cpu`` / cores: time the process spends neither computing nor able to;
* ``eval``: one validation pass (``eval.batches`` batches); ``sample``: 16 sampled tokens as the loop
  takes them (every process, on the sharded parameters: each token's forward pass has collectives).
  Tried and dropped: gathering the parameters once and sampling on process 0 alone was slower
  (900 vs 465 ms for 16 tokens, ``--small``, load 10), the gather costing more than it saved.

The ratio line compares the 2 × 2 step time with the 1 × 4 one (target ≤ 1.3 on a quiet machine).
``uptime``'s load average is printed with each round: on a shared machine compare rounds, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASE = ["mesh.fsdp=2", "eval.sample_tokens=0", "train.progress=false"]  # the layout: fsdp 2 x data 2
SMALL = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.seq_len=16", "train.batch_size=8"]


def worker(cfg_path: str, overrides: list[str], steps: int, distributed: bool) -> None:
    t0 = time.perf_counter()
    if distributed:
        from spiraljax.train.distributed import initialize

        initialize()
    t_init = time.perf_counter() - t0
    sys.path.insert(0, str(HERE))
    import common  # noqa: F401  (host-memory reuse, as train.py; must precede the first computation)
    import jax
    import numpy as np

    from spiraljax import config
    from spiraljax.train.setup import batch_for_step, setup
    from spiraljax.train.sharding import replicated, shard_batch

    t0 = time.perf_counter()
    cfg = config.load(cfg_path, overrides)
    p = setup(cfg)
    state = p.init_state(carry=False)
    t_prepare = time.perf_counter() - t0

    t0 = time.perf_counter()
    compiled = p.jit_step().lower(state, shard_batch(batch_for_step(p.dataset, 0, 1), p.mesh)).compile()
    t_compile = time.perf_counter() - t0

    for s in range(2):  # warm-up (first executions set up the collectives' communicators)
        state, out = compiled(state, shard_batch(batch_for_step(p.dataset, s, 1), p.mesh))
    jax.block_until_ready(out)
    c0, w0 = time.process_time(), time.perf_counter()
    for s in range(2, 2 + steps):
        state, out = compiled(state, shard_batch(batch_for_step(p.dataset, s, 1), p.mesh))
    jax.device_get(out)
    step_ms = (time.perf_counter() - w0) / steps * 1e3
    cpu_ms = (time.process_time() - c0) / steps * 1e3

    from spiraljax.experiment import standard_hooks
    from spiraljax.losses import evaluate_lm, make_eval_step

    eval_step = jax.jit(make_eval_step(p.model, p.dataset.token_bytes))
    evaluate_lm(p.model, state["params"], p.dataset, 0, eval_step)  # compile
    t0 = time.perf_counter()
    evaluate_lm(p.model, state["params"], p.dataset, 1, eval_step)
    eval_ms = (time.perf_counter() - t0) * 1e3
    sample = standard_hooks(config.load(cfg_path, [*overrides, "eval.sample_tokens=16"]), p.model, p.dataset).sample
    sample(state["params"], 0)  # compile; as in the loop, every process samples on the sharded parameters
    t0 = time.perf_counter()
    sample(state["params"], 0)
    sample_ms = (time.perf_counter() - t0) * 1e3

    n = jax.device_count()
    stacked = jax.sharding.NamedSharding(p.mesh, jax.sharding.PartitionSpec(("data", "fsdp", "model")))
    grads = jax.tree.map(
        lambda x: jax.make_array_from_callback(
            (n, *x.shape), stacked, lambda idx, x=x: np.ones((1, *x.shape), x.dtype)
        ),
        p.abstract_state["params"],
    )
    allreduce = jax.jit(lambda g: jax.tree.map(lambda x: x.sum(0), g), out_shardings=replicated(p.mesh))
    jax.block_until_ready(allreduce(grads))
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        jax.block_until_ready(allreduce(grads))
        times.append(time.perf_counter() - t0)
    if jax.process_index() == 0:
        cores = len(os.sched_getaffinity(0))
        print(
            "RESULT "
            + json.dumps(
                {
                    "processes": jax.process_count(),
                    "devices": n,
                    "init_s": t_init,
                    "prepare_s": t_prepare,
                    "compile_s": t_compile,
                    "step_ms": step_ms,
                    "cpu_ms": cpu_ms,
                    "allreduce_ms": statistics.median(times) * 1e3,
                    "eval_ms": eval_ms,
                    "sample_ms": sample_ms,
                    "wait_ms": max(step_ms - cpu_ms / cores, 0.0),
                }
            ),
            flush=True,
        )


def run_layout(processes: int, args) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    inner = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--config",
        args.config,
        "--steps",
        str(args.steps),
        "--set",
        *BASE,
        *(SMALL if args.small else []),
        *args.set,
    ]
    if processes == 1:
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
        cmd = inner
    else:
        cmd = [
            sys.executable,
            "-m",
            "spiraljax.launch",
            "-n",
            str(processes),
            "-d",
            str(4 // processes),
            "--",
            *inner,
            "--distributed",
        ]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    if r.returncode or not lines:
        sys.exit(f"error: {processes}-process run failed (status {r.returncode}): {r.stderr.strip()[-800:]}")
    return {**json.loads(lines[-1][len("RESULT ") :]), "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/transformer_tiny.yaml")
    ap.add_argument("--set", nargs="*", default=[], help="extra overrides (after the small-size defaults)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--small", action="store_true", help="the tests' tiny model (d_model 32, 1 layer, 8 x 16 tokens)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.config, args.set, args.steps, args.distributed)
    cols = [
        "init_s",
        "prepare_s",
        "compile_s",
        "step_ms",
        "cpu_ms",
        "wait_ms",
        "allreduce_ms",
        "eval_ms",
        "sample_ms",
        "wall_s",
    ]
    results: dict[int, list[dict]] = {1: [], 2: []}
    print("layout  " + "  ".join(f"{c:>12}" for c in cols) + "   load")
    for _ in range(args.rounds):
        for processes in (1, 2):
            r = run_layout(processes, args)
            results[processes].append(r)
            load = os.getloadavg()[0]
            print(
                f"{processes}x{4 // processes}     " + "  ".join(f"{r[c]:12.2f}" for c in cols) + f"   {load:.1f}",
                flush=True,
            )
    med = {p: {c: statistics.median(r[c] for r in rs) for c in cols} for p, rs in results.items()}
    for p in (1, 2):
        print(f"median {p}x{4 // p}: " + ", ".join(f"{c} {med[p][c]:.2f}" for c in cols))
    rounds = ", ".join(f"{b['step_ms'] / a['step_ms']:.2f}" for a, b in zip(results[1], results[2]))
    print(f"2x2 / 1x4 per-step time: {med[2]['step_ms'] / med[1]['step_ms']:.2f}  (per-round ratios: {rounds})")


if __name__ == "__main__":
    main()
