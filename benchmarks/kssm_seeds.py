#!/usr/bin/env python
"""Train a K-SSM config on several seeds and run the causality suite on each: one table row per seed,
mean ± sd and the pass rate.

  python benchmarks/kssm_seeds.py --config configs/kssm_v3_shakespeare.yaml --seeds 0 1 2 3 4 \
      [--set model.global_mix=0.5 ...] [--tag NAME] [--root runs/seeds] [--eval-only | --table-only] [--json]

Run directories are ``ROOT/TAG_sSEED`` (TAG defaults to the config's name); a run whose final
checkpoint exists is not trained again, so the script resumes an interrupted sweep and
``--eval-only`` re-evaluates finished runs with the current suite. Every row is also appended to
``ROOT/TAG.jsonl``; ``--table-only`` prints the table of the newest row per requested seed from it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parent.parent
PY = sys.executable


def finished(run: Path, steps: int) -> bool:
    """The run logged an evaluation at its last step."""
    log = run / "metrics.jsonl"
    if not log.is_file():
        return False
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return any(r.get("kind") == "eval" and r.get("step") == steps for r in rows)


def run_json(args: list[str]) -> dict:
    out = subprocess.run([PY, *args], cwd=ROOT_DIR, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def seed_row(config: str, seed: int, overrides: list[str], run: Path, eval_only: bool) -> dict:
    from spiraljax import config as config_lib

    sets = [*overrides, f"train.seed={seed}"]
    steps = config_lib.load(ROOT_DIR / config, sets).train.steps
    if not finished(run, steps):
        if eval_only:
            raise RuntimeError(f"{run}: not finished and --eval-only given")
        cmd = [PY, "train.py", "--config", config, "--workdir", str(run), "--set", *sets]
        if (run / "config.yaml").is_file():
            cmd = [PY, "train.py", "--workdir", str(run), "--resume"]
        subprocess.run(cmd, cwd=ROOT_DIR, check=True, stdout=subprocess.DEVNULL)
    lm = run_json(["evaluate.py", str(run), "--suite", "lm", "--json"])["lm"]
    cz = run_json(["evaluate.py", str(run), "--suite", "causality", "--json"])["causality"]
    m = cz["model"]
    return {
        "seed": seed,
        "run": str(run),
        "bpc": lm.get("bpc"),
        "R_mean": m["variance"]["mean"],
        "variance": m["variance"]["std_of_sequence_means"],
        "delta_logits": m["intervention"]["mean_abs_delta_logits"],
        "t_p": m["intervention"]["paired_t_p"],
        "r": m["correlation"]["pearson_r"],
        "r_p": m["correlation"]["p"],
        "R_share": m.get("share", {}).get("share"),
        "max_achieved_error": m["intervention"].get("max_abs_achieved_error"),
        "passed": [m[k]["passed"] for k in ("variance", "intervention", "correlation")],
        "control_fails": cz.get("control_fails_intervention"),
        "all": bool(cz.get("passed")),
    }


def fmt(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def table(rows: list[dict]) -> str:
    mark = lambda ok: "" if ok else " ✗"  # noqa: E731
    lines = [
        "| seed | val BPC | R mean | 1 variance (> 0.01) | 2 \\|Δlogits\\| (t-test p) | 3 r(R, entropy) "
        "| R share | all |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p1, p2, p3 = r["passed"]
        lines.append(
            f"| {r['seed']} | {fmt(r['bpc'], '.3f')} | {r['R_mean']:.3f} | {r['variance']:.4f}{mark(p1)} | "
            f"{r['delta_logits']:.2f} (p {r['t_p']:.1e}){mark(p2)} | {r['r']:+.3f}{mark(p3)} | "
            f"{fmt(r['R_share'], '.3f')} | {'pass' if r['all'] else 'fail'} |"
        )

    def ms(k: str) -> str:
        v = [r[k] for r in rows if r[k] is not None]
        return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" if len(v) > 1 else "—"

    lines.append(
        f"| mean ± sd | {ms('bpc')} | {ms('R_mean')} | {ms('variance')} | {ms('delta_logits')} | {ms('r')} | "
        f"{ms('R_share')} | {sum(r['all'] for r in rows)}/{len(rows)} pass |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--tag")
    p.add_argument("--root", default="runs/seeds")
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("--table-only", action="store_true", help="print the table from ROOT/TAG.jsonl, run nothing")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not (ROOT_DIR / args.config).is_file():
        print(f"error: {args.config}: config not found", file=sys.stderr)
        return 2
    tag = args.tag or Path(args.config).stem
    root = ROOT_DIR / args.root
    root.mkdir(parents=True, exist_ok=True)
    if args.table_only:
        log = root / f"{tag}.jsonl"
        if not log.is_file():
            print(f"error: {log}: no results yet", file=sys.stderr)
            return 2
        newest = {r["seed"]: r for r in map(json.loads, log.read_text().splitlines()) if r["seed"] in args.seeds}
        rows = [newest[s] for s in args.seeds if s in newest]
        print(json.dumps(rows, indent=2) if args.json else f"{tag}\n" + table(rows))
        return 0
    rows = []
    for seed in args.seeds:
        try:
            row = seed_row(args.config, seed, args.set, root / f"{tag}_s{seed}", args.eval_only)
        except (RuntimeError, subprocess.CalledProcessError) as err:
            print(f"error: seed {seed}: {err}", file=sys.stderr)
            continue
        row.update(tag=tag, config=args.config, overrides=args.set)
        rows.append(row)
        with open(root / f"{tag}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    if rows:
        print(json.dumps(rows, indent=2) if args.json else f"\n{tag} ({' '.join(args.set)})\n" + table(rows))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
