#!/usr/bin/env python
"""Bit-identity check of a speed change: K train steps in two trees, every number compared bit for bit.

  PYTHONPATH=/path/to/main  python benchmarks/same_numbers.py run /tmp/a.npz --config configs/hebbian_tiny.yaml
  PYTHONPATH=/path/to/branch python benchmarks/same_numbers.py run /tmp/b.npz --config configs/hebbian_tiny.yaml
  python benchmarks/same_numbers.py compare /tmp/a.npz /tmp/b.npz

``run`` trains ``--steps`` steps (default 5) of the config (``--set`` overrides) with the loop's own jitted
step (:func:`spiraljax.train.setup.setup`, seed ``train.seed``, batches 0…K−1) and writes each step's
loss and every leaf of the final train state (params, AdamW moments, step, rng, skip count) to an npz.
``compare`` exits 0 when both files hold the same leaves with equal dtypes and equal bits (NaN equal
to NaN), else 1, naming each differing leaf with its largest absolute difference.

A change that reorders a sum, swaps the matmul library XLA picks for a dot (YNNPACK or Eigen, by
shape and operand layout) or changes which producer a reduction fuses with shows up here as a
difference of about one ulp that grows over the steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def run(out: str, config_path: str, sets: list[str], steps: int) -> list[float]:
    """Train ``steps`` steps and save ``losses`` and every state leaf (keyed by its tree path) to ``out``."""
    import jax

    from spiraljax import config
    from spiraljax.train.setup import setup

    s = setup(config.load(config_path, sets), mesh=False)
    state, step = s.init_state(), s.jit_step()
    losses = []
    for i in range(steps):
        state, metrics = step(state, s.batch(i))
        losses.append(float(metrics["loss"]))
    leaves = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(state)}
    if "losses" in leaves:
        raise ValueError("a state leaf is named 'losses'")
    np.savez(out, losses=np.asarray(losses), **leaves)
    return losses


def compare(a_path: str, b_path: str) -> list[str]:
    """One line per difference between two ``run`` files (empty: bit-identical)."""
    with np.load(a_path) as a, np.load(b_path) as b:
        only = sorted(set(a.files) ^ set(b.files))
        lines = [f"{k}: in one file only" for k in only]
        for k in sorted(set(a.files) & set(b.files)):
            x, y = a[k], b[k]
            if x.dtype != y.dtype or x.shape != y.shape:
                lines.append(f"{k}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
            elif not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
                diff = np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))
                lines.append(f"{k}: max |difference| {diff:.3g}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train K steps, save losses and the final state")
    r.add_argument("out")
    r.add_argument("--config", required=True)
    r.add_argument("--set", nargs="*", default=[])
    r.add_argument("--steps", type=int, default=5)
    c = sub.add_parser("compare", help="compare two run files bit for bit")
    c.add_argument("a")
    c.add_argument("b")
    args = p.parse_args(argv)
    if args.cmd == "run":
        if args.steps < 1:
            p.error(f"--steps must be >= 1, got {args.steps}")
        from spiraljax.errors import USER_ERRORS

        try:
            losses = run(args.out, args.config, args.set, args.steps)
        except USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"{args.config} {' '.join(args.set)}: losses {losses} → {args.out}")
        return 0
    for path in (args.a, args.b):
        if not Path(path).is_file():
            p.error(f"no such file: {path}")
    lines = compare(args.a, args.b)
    with np.load(args.a) as a:
        n = len(a.files)
    print(f"{args.a} vs {args.b}: {n} arrays, " + ("bit-identical" if not lines else f"{len(lines)} differ"))
    for line in lines:
        print("  " + line)
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
