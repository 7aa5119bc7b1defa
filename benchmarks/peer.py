#!/usr/bin/env python
"""spiraljax vs PyTorch eager, side by side: the same architecture's full train step on both, timed
interleaved (JAX step, torch step, JAX step, …) so machine noise hits both sides alike.

  pip install -e '.[bench]'              # torch is a benchmark-only extra
  python benchmarks/peer.py              # dense baseline b32×T128, Spiralformer femto b16 and b1
  python benchmarks/peer.py --repeats 30 --json

The PyTorch side (benchmarks/torch_reference.py) is written from the math with the same parameter
shapes (asserted equal) and the same optimizer (clip + AdamW, decay on matrices). torch runs on
``--threads`` intra-op threads (default 2); JAX uses what XLA uses. ratio = PyTorch ms / spiraljax ms:
> 1 means spiraljax is faster.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MISSING_TORCH = "benchmarks/peer.py needs PyTorch (benchmark-only extra): pip install -e '.[bench]'"

# workload: (config, overrides). Spiralformer's model.spiral.impl is "auto": spiraljax runs what
# spiraljax.ops.impl picks (dense-masked at T 32 on the CPU), torch the original's sparse algorithm; the
# "both dense" row runs the dense-masked spiral attention on both sides.
WORKLOADS = {
    "dense baseline b32 T128": ("configs/transformer_tiny.yaml", ["train.batch_size=32"]),
    "Spiralformer femto b16 T32": ("configs/spiralformer_femto.yaml", ["train.batch_size=16"]),
    "Spiralformer femto b16 T32, both dense": ("configs/spiralformer_femto.yaml",
                                               ["train.batch_size=16", "model.spiral.impl=dense"]),
    "Spiralformer femto b1 T32": ("configs/spiralformer_femto.yaml", ["train.batch_size=1"]),
}


def require_torch() -> None:
    """Exit with a one-line message when torch is not importable (``SPIRALJAX_BENCH_NO_TORCH=1`` simulates it)."""
    if os.environ.get("SPIRALJAX_BENCH_NO_TORCH") == "1" or importlib.util.find_spec("torch") is None:
        sys.exit(MISSING_TORCH)


def silence_ids():
    try:
        from spiraljax.glyph_table import SILENCE_IDS
    except ImportError:
        from spiraljax.data.glyphs import SILENCE_IDS
    return SILENCE_IDS


def build_pair(cfg_path: str, overrides: list[str], threads: int):
    """(jax_step, torch_step, info): zero-argument callables that run one full train step each."""
    import jax
    import numpy as np
    import torch

    from spiraljax import config
    from spiraljax.data.base import build_dataset
    from spiraljax.models import build
    from spiraljax.train.optim import make_optimizer
    from spiraljax.train.step import init_state, make_train_step
    from torch_reference import build_reference, make_torch_step, param_count

    torch.set_num_threads(threads)
    cfg = config.load(str(ROOT / cfg_path), overrides)
    model = build(cfg.model)
    tx = make_optimizer(cfg.train)
    batch = build_dataset(cfg).train_batch(0)
    state = jax.jit(lambda x: init_state(model, tx, x, 0))(batch["inputs"][:1])
    step = jax.jit(make_train_step(model, tx), donate_argnums=0)  # as the training loop runs it
    holder = {"state": state}

    def jax_step():
        holder["state"], out = step(holder["state"], batch)
        return jax.block_until_ready(out["loss"])

    torch.manual_seed(0)
    ref = build_reference(cfg.model, silence_ids())
    n_jax = sum(int(x.size) for x in jax.tree.leaves(state["params"]))
    n_torch = param_count(ref)
    assert n_torch == n_jax, f"{cfg_path}: torch reference has {n_torch} parameters, spiraljax {n_jax}"
    tbatch = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}
    tbatch["inputs"], tbatch["targets"] = tbatch["inputs"].long(), tbatch["targets"].long()
    torch_step_fn = make_torch_step(ref, cfg.train)

    def torch_step():
        return torch_step_fn(tbatch)["loss"].item()

    shape = tuple(np.shape(batch["inputs"]))
    return jax_step, torch_step, {"params": n_jax, "batch": f"{shape[0]}x{shape[1]}"}


def interleaved(a, b, repeats: int, warmup: int) -> tuple[list[float], list[float]]:
    """Seconds per call of ``a`` and ``b``, alternating a, b, a, b, … after ``warmup`` calls of each."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for i in range(repeats):
        for fn, out in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return ta, tb


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=15, help="timed steps per side (≥ 10 recommended)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side (compile, allocator)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--only", nargs="*", default=None, help="workload names (substring match)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    require_torch()
    sys.path.insert(0, str(HERE))
    from common import emit

    rows = []
    for name, (cfg_path, sets) in WORKLOADS.items():
        if args.only and not any(s in name for s in args.only):
            continue
        jax_step, torch_step, info = build_pair(cfg_path, sets, args.threads)
        tj, tt = interleaved(jax_step, torch_step, args.repeats, args.warmup)
        mj, mt = statistics.median(tj) * 1e3, statistics.median(tt) * 1e3
        rows.append({"workload": name, "params": info["params"], "PyTorch_ms": mt, "spiraljax_ms": mj,
                     "ratio": mt / mj, "load_avg_1m": os.getloadavg()[0]})
    emit(rows, args.json, ["workload", "params", "PyTorch_ms", "spiraljax_ms", "ratio", "load_avg_1m"],
         f"train step, spiraljax vs PyTorch eager (torch {args.threads} threads, median of {args.repeats}, "
         f"interleaved; ratio = PyTorch ms / spiraljax ms, > 1: spiraljax faster)")


if __name__ == "__main__":
    main()
