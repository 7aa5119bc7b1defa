#!/usr/bin/env python
"""Long context: train-step speed and compiled peak memory vs the window length T, per family, with the
scaling exponent (issue #24, "Speed and memory").

  nice python benchmarks/long_context.py                                   # T 1k, 4k, 16k, every family
  python benchmarks/long_context.py --lengths 1024 4096 --families local spiral --repeats 5 --json

Each family is its ~1M-parameter report configuration at batch 1 and ``model.seq_len = T`` (the train
step of ``benchmarks/train_step.py``: jit-compiled, donated state, as training runs it):

* ``dense``    configs/transformer_tiny.yaml (d128 L4): full causal attention, O(T²);
* ``local``    the same with ``model.attention=local``, ``model.window = ⌈log₂T⌉+1`` (the keys per
  query of spiral attention);
* ``spiral``   configs/spiralformer_shakespeare.yaml with ``model.spiral.impl=sparse``;
* ``hebbian``  configs/hebbian_shakespeare.yaml (patch 4, window 32 patches, chunked fast weights);
* ``kssm_v3``  configs/kssm_v3_shakespeare.yaml.

A step whose compiled peak exceeds ``--max-peak-gib`` is compiled (its peak is reported) but not run.
``exponent`` is the least-squares slope of log(ms/step) against log(T) over the lengths that ran
(1 = linear), ``mem_exponent`` the same for the peak memory; ``target`` marks local, spiral and Hebbian
against the issue's ≤ 1.15.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from common import emit
from spiraljax import config
from train_step import measure

FAMILIES = {  # name: (config, overrides; {w} is ⌈log₂T⌉+1)
    "dense": ("configs/transformer_tiny.yaml", []),
    "local": ("configs/transformer_tiny.yaml", ["model.attention=local", "model.window={w}"]),
    "spiral": ("configs/spiralformer_shakespeare.yaml", ["model.spiral.impl=sparse"]),
    "hebbian": ("configs/hebbian_shakespeare.yaml", []),
    "kssm_v3": ("configs/kssm_v3_shakespeare.yaml", []),
}
LINEAR_TARGET = {"local": 1.15, "spiral": 1.15, "hebbian": 1.15}


def fair_window(t: int) -> int:
    """⌈log₂T⌉ + 1: the keys per query of spiral attention at length T (offsets 0, 1, 2, 4, …)."""
    return math.ceil(math.log2(t)) + 1


def slope(xs: list[float], ys: list[float | None]) -> float | None:
    """Least-squares slope of log y against log x over the points with a y (None with fewer than two)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if y]
    if len(pts) < 2:
        return None
    return float(np.polyfit(*zip(*pts), 1)[0])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="*", default=[1024, 4096, 16384])
    p.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--set", nargs="*", default=[], help="overrides for every family")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-peak-gib", type=float, default=4.0, help="compile but do not run steps above this peak")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows, summary = [], []
    for family in args.families:
        path, sets = FAMILIES[family]
        runs = []
        for t in args.lengths:
            overrides = [s.format(w=fair_window(t)) for s in sets]
            cfg = config.load(path, [*overrides, f"model.seq_len={t}", "train.batch_size=1", *args.set])
            r = measure(cfg, args.repeats, max_peak_mib=args.max_peak_gib * 1024)
            runs.append(r)
            rows.append(
                {
                    "family": family,
                    "T": t,
                    "window": fair_window(t) if family == "local" else None,
                    "params_M": r["params_M"],
                    "ms_per_step": r["ms_per_step"],
                    "tokens_per_s": r["tokens_per_s"],
                    "peak_MiB": r["peak_MiB"],
                }
            )
            shown = f"{r['ms_per_step']:.1f} ms/step" if r["ms_per_step"] else "not run"
            print(f"  {family} T={t}: {shown}, peak {r['peak_MiB']:.0f} MiB", file=sys.stderr, flush=True)
        exp = slope(args.lengths, [r["ms_per_step"] for r in runs])
        target = LINEAR_TARGET.get(family)
        summary.append(
            {
                "family": family,
                "exponent": exp,
                "mem_exponent": slope(args.lengths, [r["peak_MiB"] for r in runs]),
                "target": None
                if target is None or exp is None
                else f"{'met' if exp <= target else 'NOT met'} (<= {target})",
            }
        )
    if args.json:
        emit(rows + summary, True, [], "long context train step")
        return
    emit(
        rows,
        False,
        ["family", "T", "window", "params_M", "ms_per_step", "tokens_per_s", "peak_MiB"],
        "long context train step, batch 1",
    )
    emit(
        summary,
        False,
        ["family", "exponent", "mem_exponent", "target"],
        f"scaling exponents over T = {', '.join(map(str, args.lengths))} (slope of log time / log T)",
    )


if __name__ == "__main__":
    main()
