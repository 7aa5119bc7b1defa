"""R over training with tone zones: ``python -m spiraljax.eval.tone RUN_DIR``.

The zones of R, from low to high: ∅ Unformed, ☾ Intimacy, ⚖ Balance, 🌀 Mystery, ✨ Wonder, 🔥 Passion,
🜂 Ache (:data:`TONE_ZONES`; their lower bounds are ``ops.kuramoto.ZONE_BOUNDS``).

Writes ``RUN_DIR/plots/R_tone_zones.png`` and prints the zone-visit counts logged in training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from spiraljax.ops.kuramoto import ZONE_BOUNDS
from spiraljax.runs import read_metrics

TONE_ZONES = tuple(
    zip(  # (lower bound of R, symbol, name) per zone; the bounds are ops.kuramoto's
        (0.0, *ZONE_BOUNDS),
        ("∅", "☾", "⚖", "🌀", "✨", "🔥", "🜂"),
        ("Unformed", "Intimacy", "Balance", "Mystery", "Wonder", "Passion", "Ache"),
        strict=True,
    )
)

ZONE_COLORS = ("#eeeeee", "#dde7f5", "#dff0e0", "#efe3f5", "#fff4cc", "#ffe0cc", "#f8d0d0")


def zone_name(r: float) -> str:
    """``"<symbol> <name>"`` of the tone zone holding a (host) value of R, e.g. ``0.6 → "🌀 Mystery"``."""
    for lo, sym, name in reversed(TONE_ZONES):
        if r >= lo:
            return f"{sym} {name}"
    return ""


def progress_fields(metrics: dict) -> dict[str, str]:
    """Progress-bar fields of a logged train step: ``{"zone": zone_name(R_mean)}`` where the model logs
    the mean order parameter (K-SSM), else nothing (the loop's ``TrainHooks.progress``)."""
    return {"zone": zone_name(float(metrics["R_mean"]))} if "R_mean" in metrics else {}


def plot_tone(run_dir: str | Path) -> tuple[Path, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    rows = [r for r in read_metrics(run / "metrics.jsonl") if r.get("kind") == "train" and "R_mean" in r]
    if not rows:
        raise FileNotFoundError(f"{run}: metrics.jsonl has no R_mean (not a K-SSM run?)")
    steps = np.array([r["step"] for r in rows])
    mean = np.array([r["R_mean"] for r in rows])
    std = np.array([r.get("R_std", 0.0) for r in rows])
    counts = np.sum([r["zone_counts"] for r in rows if "zone_counts" in r], axis=0)
    fig, ax = plt.subplots(figsize=(8, 4))
    bounds = [z[0] for z in TONE_ZONES] + [1.0]
    for (lo, sym, name), hi, color in zip(TONE_ZONES, bounds[1:], ZONE_COLORS):
        ax.axhspan(lo, hi, color=color, lw=0)
        ax.text(steps[-1], (lo + hi) / 2, f" {name}", va="center", fontsize=7)
    ax.plot(steps, mean, color="k", lw=1.2, label="R mean")
    ax.fill_between(steps, mean - std, mean + std, color="k", alpha=0.15, label="± std")
    ax.set_ylim(0, 1)
    ax.set_xlabel("step")
    ax.set_ylabel("order parameter R")
    ax.set_title(f"{run.name}: R over training with tone zones")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    out = run / "plots" / "R_tone_zones.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    total = max(float(np.sum(counts)), 1.0)
    lines = [f"final R mean {mean[-1]:.3f} ± {std[-1]:.3f} → {zone_name(mean[-1])}", "zone visits (logged steps):"]
    lines += [
        f"  {sym} {name:<9} {int(c):>9}  ({100 * c / total:5.1f} %)" for (_, sym, name), c in zip(TONE_ZONES, counts)
    ]
    return out, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spiraljax.eval.tone", description=__doc__)
    p.add_argument("run_dir")
    args = p.parse_args(argv)
    try:
        out, text = plot_tone(args.run_dir)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
