"""Render a run's metrics.jsonl as PNG plots and a terminal summary.

``python -m spiraljax.eval.plots RUN_DIR`` writes ``RUN_DIR/plots/metrics.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spiraljax.data.base import loss_unit
from spiraljax.runs import read_metrics

CORE = ("loss", "grad_norm", "lr", "tokens_per_s")


def series(rows: list[dict], kind: str, key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if r.get("kind") == kind and isinstance(r.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def eval_unit(rows: list[dict]) -> str:
    """What the eval rows' 'bpc' measures ("BPC" or "bits/glyph"; runs from before the unit field: BPC)."""
    return next((r["unit"] for r in reversed(rows) if r.get("kind") == "eval" and r.get("unit")), "BPC")


def plot_run(run_dir: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    rows = read_metrics(run / "metrics.jsonl")
    train_keys = sorted(
        {
            k
            for r in rows
            if r.get("kind") == "train"
            for k, v in r.items()
            if isinstance(v, (int, float)) and k not in ("step", "kind", "ce", "skipped")
        }
    )
    keys = [k for k in CORE if k in train_keys] + [k for k in train_keys if k not in CORE]
    panels = keys + ["val"]
    ncol = 3
    nrow = (len(panels) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 2.8 * nrow), squeeze=False)
    for ax, key in zip(axes.flat, panels):
        if key == "val":
            unit = eval_unit(rows)
            for k in ("loss", "bpc"):
                x, y = series(rows, "eval", k)
                ax.plot(x, y, marker="o", label=f"val {unit if k == 'bpc' else f'loss ({loss_unit(unit)})'}")
            ax.legend(fontsize=7)
        else:
            x, y = series(rows, "train", key)
            ax.plot(x, y, lw=1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    out = run / "plots" / "metrics.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def summary(run_dir: str | Path) -> str:
    rows = read_metrics(Path(run_dir) / "metrics.jsonl")
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    if not train:
        return f"{run_dir}: no metrics yet"
    last = train[-1]
    lines = [
        f"{run_dir}: step {last['step']}  loss {last.get('loss', float('nan')):.4f}  skipped {last.get('skipped', 0)}"
    ]
    unit = eval_unit(rows)
    for r in evals[-5:]:
        lines.append(f"  eval step {r['step']:>6}: val loss {r['loss']:.4f}  {unit} {r['bpc']:.4f}  PPL {r['ppl']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spiraljax.eval.plots", description=__doc__)
    p.add_argument("run_dir")
    args = p.parse_args(argv)
    if not (Path(args.run_dir) / "metrics.jsonl").is_file():
        print(f"error: {args.run_dir}: no metrics.jsonl", file=sys.stderr)
        return 2
    print(summary(args.run_dir))
    print(f"wrote {plot_run(args.run_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
