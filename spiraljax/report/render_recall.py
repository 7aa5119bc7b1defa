"""Tables and the accuracy-vs-state-size figure of the recall budget (:mod:`spiraljax.report.recall_state`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spiraljax.eval import stats
from spiraljax.report.render import trained_at


def _cells(report: dict) -> list[str]:
    return [f"T{t}_p{p}" for t, p in report["budget"]["cells"]]


def _values(report: dict, entry: str, cell: str, key: str) -> list[float]:
    return [float(r["cells"][cell][key]) for r in report["runs"][entry].values()]


def _mean_sd(xs: list[float]) -> str:
    """``"mean ± sd"`` over seeds, or the one value when there is a single seed."""
    mean, sd, n = stats.mean_sd(xs)
    return stats.plus_minus(mean, sd) if n > 1 else f"{mean:.3f}"


def _head(cell: str, report: dict) -> str:
    t, p = cell[1:].split("_p")
    cap = max(1, (int(t) - 2) // 4)
    return f"T {t}, {min(int(p), cap)} pairs"


def table(report: dict, key: str) -> list[str]:
    """One row per model: state bytes at each T, then ``key`` (mean ± sd over seeds) per cell."""
    cells = _cells(report)
    lengths = sorted({int(c[1:].split("_p")[0]) for c in cells})
    lines = [
        "| model | params | "
        + " | ".join(f"state bytes, T {t}" for t in lengths)
        + " | "
        + " | ".join(_head(c, report) for c in cells)
        + " |",
        "|---|---|" + "---|" * (len(lengths) + len(cells)),
    ]
    for entry in report["runs"]:
        runs = list(report["runs"][entry].values())
        by_t = {int(c[1:].split("_p")[0]): runs[0]["cells"][c]["state_bytes"] for c in cells}
        lines.append(
            f"| {entry} | {runs[0]['params']:,} | "
            + " | ".join(f"{by_t[t]:,}" for t in lengths)
            + " | "
            + " | ".join(_mean_sd(_values(report, entry, c, key)) for c in cells)
            + " |"
        )
    first = next(iter(report["runs"].values()))
    guess = [np.mean([float(r["cells"][c]["guess_present"]) for r in first.values()]) for c in cells]
    lines.append(
        "| guess among present values | | "
        + " | " * (len(lengths) - 1)
        + " | "
        + " | ".join(f"{g:.3f}" for g in guess)
        + " |"
    )
    return lines


def seeds_line(report: dict, cell: str) -> list[str]:
    """First-query accuracy of every seed at ``cell`` (the target cell)."""
    if cell not in _cells(report):
        return []
    out = [f"First-query accuracy per seed at {_head(cell, report)}:", ""]
    for entry in report["runs"]:
        vals = _values(report, entry, cell, "first_accuracy")
        out.append(f"* {entry}: " + " / ".join(f"{v:.3f}" for v in vals))
    return out


def _commit(report: dict) -> str:
    """The report's commit (7 hex digits, "(dirty)" when the tree had changes), or "?"."""
    git = report["provenance"].get("git") or {}
    return (git.get("commit") or "?")[:7] + (" (dirty)" if git.get("dirty") else "")


def block(report: dict, figs: dict[str, str] | None = None) -> str:
    """The generated block: budget, both tables, the per-seed line at the target cell, the figure."""
    b = report["budget"]
    parts = [
        f"Budget `{b['name']}`: {b['steps']} steps × {b['batch']} rows × T {b['train_length']}, "
        f"{b['train_pairs'][0]}–{b['train_pairs'][1]} pairs, lr {b['lr']}, d {b['d_model']}, "
        f"{b['n_layers']} layers; seeds {', '.join(map(str, report['seeds']))}; {b['eval_batches']} × "
        f"{b['batch']} fresh sequences per cell. Command: `{report['command']}`; commit "
        f"{_commit(report)}; the runs were trained at commit "
        f"{trained_at([r for seeds in report['runs'].values() for r in seeds.values()], digits=7)}.",
        "",
        "**Accuracy on first queries** (mean ± sd over seeds; the answer is only in the pairs):",
        "",
        *table(report, "first_accuracy"),
        "",
        "**Accuracy on all queries:**",
        "",
        *table(report, "accuracy"),
        "",
        *seeds_line(report, "T256_p16"),
        "",
    ]
    if figs:
        parts += [f"![{name}]({path})" for name, path in figs.items()] + [""]
    else:
        parts.append(
            f"Full report with the figure (first-query accuracy vs state bytes): `{report['report_md']}`, "
            f"`{Path(report['report_md']).parent / 'recall_vs_state.png'}`."
        )
    return "\n".join(parts).rstrip() + "\n"


def markdown(report: dict, figs: dict[str, str]) -> str:
    return f"# MQAR recall vs state size\n\n{block(report, figs)}"


def figures(report: dict, out: Path) -> dict[str, str]:
    """First-query accuracy vs state bytes (log x), one marker per model and cell, ± sd bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = _cells(report)
    fig, axes = plt.subplots(1, len(cells), figsize=(3.2 * len(cells), 3.2), sharey=True, squeeze=False)
    for ax, cell in zip(axes[0], cells):
        for entry in report["runs"]:
            runs = list(report["runs"][entry].values())
            x = runs[0]["cells"][cell]["state_bytes"]
            ys = _values(report, entry, cell, "first_accuracy")
            ax.errorbar([x], [np.mean(ys)], yerr=[np.std(ys)], fmt="o", label=entry, capsize=2)
        ax.axhline(
            np.mean([float(r["cells"][cell]["guess_present"]) for r in next(iter(report["runs"].values())).values()]),
            color="grey",
            ls=":",
            lw=1,
        )
        ax.set(xscale="log", xlabel="state bytes per sequence", title=_head(cell, report), ylim=(-0.02, 1.02))
    axes[0][0].set_ylabel("first-query accuracy")
    axes[0][-1].legend(fontsize=6, loc="center right")
    fig.tight_layout()
    path = out / "recall_vs_state.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"recall_vs_state": path.name}
