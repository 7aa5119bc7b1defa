#!/usr/bin/env python
"""Train-step speed: ms/step and tokens/s of the jit-compiled train step for a few model sizes.

  python benchmarks/train_step.py                      # baseline Transformer sizes
  python benchmarks/train_step.py --config configs/X.yaml --set model.d_model=256 train.batch_size=4
"""
from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from common import emit, time_fn
from spiraljax import config
from spiraljax.models import build
from spiraljax.train.optim import make_optimizer
from spiraljax.train.step import init_state, make_train_step

SIZES = {  # name: overrides of the baseline
    "tiny d128 L4": ["model.d_model=128", "model.n_layers=4", "model.n_heads=4"],
    "small d256 L6": ["model.d_model=256", "model.n_layers=6", "model.n_heads=8"],
}


def measure(cfg: config.Config, repeats: int) -> dict:
    from spiraljax.data.base import build_dataset

    model = build(cfg.model)
    tx = make_optimizer(cfg.train)
    batch = build_dataset(cfg).train_batch(0)
    state = jax.jit(lambda x: init_state(model, tx, x, 0))(batch["inputs"][:1])
    step = jax.jit(make_train_step(model, tx), donate_argnums=0)  # as the training loop runs it
    holder = {"state": state}

    def run():
        holder["state"], out = step(holder["state"], batch)
        return out["loss"]

    sec = time_fn(run, repeats=repeats, warmup=2)
    tokens = cfg.train.batch_size * cfg.model.seq_len
    n_params = sum(x.size for x in jax.tree.leaves(holder["state"]["params"]))
    return {"params_M": n_params / 1e6, "batch": f"{cfg.train.batch_size}x{cfg.model.seq_len}",
            "ms_per_step": sec * 1e3, "tokens_per_s": tokens / sec}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config")
    p.add_argument("--set", nargs="*", default=[])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = []
    if args.config:
        cfg = config.load(args.config, args.set)
        rows.append({"model": f"{cfg.model.family} ({Path(args.config).stem})", **measure(cfg, args.repeats)})
    else:
        for name, sets in SIZES.items():
            cfg = config.load(None, ["train.batch_size=32", "model.seq_len=128", *sets, *args.set])
            rows.append({"model": name, **measure(cfg, args.repeats)})
    emit(rows, args.json, ["model", "params_M", "batch", "ms_per_step", "tokens_per_s"], "train step")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
