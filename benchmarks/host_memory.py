#!/usr/bin/env python
"""Train-step time with and without host-memory reuse (spiraljax/host_memory.py), side by side.

  python benchmarks/host_memory.py                        # transformer_tiny, Spiralformer femto b16, K-SSM v3, Hebbian
  python benchmarks/host_memory.py --configs configs/transformer_small.yaml --rounds 3

The setting is per process and fixed when JAX starts, so each measurement is a fresh interpreter
(``SPIRALJAX_REUSE_HOST_MEMORY=1`` / ``0``), alternated on / off for ``--rounds`` rounds; medians over
rounds. Page faults per step (``ru_minflt``) show where the time went: glibc's default maps each step's
scratch buffer afresh.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT = [
    ("configs/transformer_tiny.yaml", []),
    ("configs/spiralformer_femto.yaml", ["train.batch_size=16"]),
    ("configs/kssm_v3_tiny.yaml", []),
    ("configs/hebbian_tiny.yaml", []),
]


def child(cfg_path: str, overrides: list[str], repeats: int) -> None:
    sys.path.insert(0, str(HERE))
    from common import HOST_MEMORY_REUSED  # applies the setting (or not) before any JAX computation
    from spiraljax import config
    from train_step import measure

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    r = measure(config.load(str(ROOT / cfg_path), overrides), repeats)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (repeats + 2)  # + warm-ups
    print(
        json.dumps(
            {
                "reuse": HOST_MEMORY_REUSED,
                "ms": r["ms_per_step"],
                "faults": faults,
                "scratch_MiB": r["scratch_MiB"],
                "batch": r["batch"],
            }
        )
    )


def measure_once(cfg_path: str, overrides: list[str], repeats: int, reuse: bool) -> dict:
    env = dict(os.environ, SPIRALJAX_REUSE_HOST_MEMORY="1" if reuse else "0")
    cmd = [sys.executable, __file__, "--child", cfg_path, "--repeats", str(repeats), "--set", *overrides]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        sys.exit(f"{cfg_path}: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else 'failed'}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="*", help="config files (default: four report-sized workloads)")
    p.add_argument("--set", nargs="*", default=[], help="overrides for every config (or the child's own)")
    p.add_argument("--rounds", type=int, default=2, help="on/off pairs per config (medians)")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per process")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.child:
        return child(args.child, args.set, args.repeats)
    sys.path.insert(0, str(HERE))
    os.environ["SPIRALJAX_REUSE_HOST_MEMORY"] = "0"  # this parent process only prints
    from common import emit

    workloads = [(c, args.set) for c in args.configs] if args.configs else [(c, s + args.set) for c, s in DEFAULT]
    rows = []
    for cfg_path, overrides in workloads:
        runs = {True: [], False: []}
        for i in range(args.rounds):
            for reuse in (True, False) if i % 2 == 0 else (False, True):
                runs[reuse].append(measure_once(cfg_path, overrides, args.repeats, reuse))
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("ms", "faults")} for k, v in runs.items()}
        rows.append(
            {
                "config": Path(cfg_path).stem,
                "batch": runs[True][0]["batch"],
                "scratch_MiB": runs[True][0]["scratch_MiB"],
                "default_ms": med[False]["ms"],
                "reuse_ms": med[True]["ms"],
                "speedup": med[False]["ms"] / med[True]["ms"],
                "default_faults": med[False]["faults"],
                "reuse_faults": med[True]["faults"],
            }
        )
        print(f"  {cfg_path}: {med[False]['ms']:.1f} → {med[True]['ms']:.1f} ms/step", file=sys.stderr, flush=True)
    emit(
        rows,
        args.json,
        ["config", "batch", "scratch_MiB", "default_ms", "reuse_ms", "speedup", "default_faults", "reuse_faults"],
        f"train step with glibc's default vs host-memory reuse (fresh process each, {args.rounds} alternated "
        f"rounds, medians; faults = page faults per step)",
    )


if __name__ == "__main__":
    main()
