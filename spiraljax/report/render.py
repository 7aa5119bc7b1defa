"""Turn the report's numbers into ``report.md``, PNG figures and the generated blocks of README.md / docs/."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from spiraljax.eval.stats import mean_sd, plus_minus
from spiraljax.eval.tone import TONE_ZONES

README_BEGIN = "<!-- report:{name}:begin -->"
README_END = "<!-- report:{name}:end -->"


def fmt_ms(values: Sequence[float | None], digits: int = 3) -> str:
    m, s, n = mean_sd(values)
    if n == 0:
        return "—"
    return plus_minus(m, s, digits)


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if isinstance(x, (int, np.integer)):
        return f"{x:,}"
    return f"{x:.{digits}f}"


def lm_table(lm: dict[str, dict[int, dict]]) -> list[str]:
    lines = [
        "| model | params | seeds | val BPC (mean ± sd) | per seed | tokens/s | step memory (MiB) | wall s / run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, seeds in lm.items():
        runs = list(seeds.values())
        bpcs = [r["final_bpc"] for r in runs]
        per_seed = ", ".join(f"{s}: {_num(r['final_bpc'])}" for s, r in seeds.items())
        params = runs[0].get("params")
        tok = mean_sd([r["tokens_per_s"] for r in runs])[0]
        wall = mean_sd([r["wall_s"] for r in runs])[0]
        mem = runs[0].get("step_memory_mb")
        lines.append(
            f"| {name} | {_num(params / 1e6 if params else None, 2)} M | {len(runs)} | **{fmt_ms(bpcs)}** | "
            f"{per_seed} | {_num(tok, 0)} | {_num(mem, 1)} | {_num(wall, 0)} |"
        )
    return lines


def causality_table(lm: dict[str, dict[int, dict]]) -> list[str]:
    lines = [
        "| model | seed | val BPC | R mean | 1 variance (> 0.01) | 2 \\|Δlogits\\| (p) | 3 r(R, entropy) (p) "
        "| achieved R at forced values | R share | all three |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, seeds in lm.items():
        passes = []
        for seed, r in seeds.items():
            c = r.get("causality")
            if not c:
                continue
            m = c["model"]
            v, i, k = m["variance"], m["intervention"], m["correlation"]
            ok = bool(c.get("passed"))
            passes.append(ok)
            ach = ", ".join(f"{float(a):.2f}" for a in i["achieved_by_value"].values())
            share = m["share"]["share"]
            mark = lambda b: "" if b else " ✗"  # noqa: E731
            lines.append(
                f"| {name} | {seed} | {_num(r['final_bpc'])} | {_num(v['mean'])} | "
                f"{v['std_of_sequence_means']:.4f}{mark(v['passed'])} | "
                f"{i['mean_abs_delta_logits']:.2f} ({i['paired_t_p']:.1e}){mark(i['passed'])} | "
                f"{k['pearson_r']:+.3f} ({k['p']:.1e}){mark(k['passed'])} | {ach} | "
                f"{_num(share)} | {'pass' if ok else 'fail'} |"
            )
        if passes:
            lines.append(f"| {name} | **pass rate** | | | | | | | | **{sum(passes)} of {len(passes)}** |")
    return lines


def recall_table(recall: dict[str, dict[int, dict]], lengths: Sequence[int]) -> list[str]:
    lines = ["| model | seeds | " + " | ".join(f"T = {n}" for n in lengths) + " |", "|---|---|" + "---|" * len(lengths)]
    for name, seeds in recall.items():
        accs = [r.get("recall", {}) for r in seeds.values()]
        cells = [fmt_ms([a.get(str(n)) for a in accs]) for n in lengths]
        lines.append(f"| {name} | {len(accs)} | " + " | ".join(cells) + " |")
    return lines


def diagnostics_table(lm: dict[str, dict[int, dict]]) -> list[str]:
    lines = [
        "| model | mechanism metric (mean over the last 10 % of logged steps) | mean ± sd over seeds |",
        "|---|---|---|",
    ]
    for name, seeds in lm.items():
        keys = sorted({k for r in seeds.values() for k, v in r["diagnostics"].items() if isinstance(v, float)})
        for k in keys:
            lines.append(f"| {name} | {k} | {fmt_ms([r['diagnostics'].get(k) for r in seeds.values()])} |")
        zones = [r["diagnostics"].get("zone_counts") for r in seeds.values() if r["diagnostics"].get("zone_counts")]
        if zones:
            total = np.sum(zones, axis=0)
            share = total / max(total.sum(), 1)
            desc = ", ".join(f"{sym} {100 * s:.0f} %" for (_, sym, _), s in zip(TONE_ZONES, share))
            lines.append(f"| {name} | tone-zone visits over training (all seeds) | {desc} |")
    return lines


def trained_at(runs: list[dict], digits: int = 10) -> str:
    """The commits ``runs`` (their ``run.json``) were trained at: the first ``digits`` hex digits,
    " (dirty)" for a tree with changes, "unknown" for a run saved without one; "—" for no run."""
    made = {(r.get("commit") or "unknown")[:digits] + (" (dirty)" if r.get("dirty") else "") for r in runs}
    return ", ".join(sorted(made)) or "—"


def header(report: dict) -> list[str]:
    b, info = report["budget"], report["provenance"]
    v = info["versions"]
    g = info["git"]
    commit = (g.get("commit") or "no git")[:10] + (" (dirty tree)" if g.get("dirty") else "")
    runs = [r for part in ("lm", "recall") for seeds in report.get(part, {}).values() for r in seeds.values()]
    return [
        f"Command: `{report['command']}` — budget `{b['name']}` ({b['description']}); "
        f"{b['steps']} steps per language model; seeds {', '.join(map(str, report['seeds']))}; "
        "mean ± sample sd over seeds.",
        f"Made with commit {commit}, Python {v['python']}, jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, "
        f"optax {v['optax']}, orbax-checkpoint {v['orbax-checkpoint']}, numpy {v['numpy']} on "
        f"{info['device']['platform']} × {info['device']['device_count']} ({info['device']['machine']}); "
        f"the runs were trained at commit {trained_at(runs)} (each run's `run.json`).",
    ]


def markdown(report: dict, figures: dict[str, str]) -> str:
    parts = [
        "# spiraljax report",
        "",
        *header(report),
        "",
        "## Every family on TinyShakespeare, beside the dense baseline",
        "",
        "Byte-level TinyShakespeare (last 10 % = validation), the same batch, sequence length, steps and data "
        "order for every model. BPC = total NLL / (ln 2 × bytes) at the last step; tokens/s is the median "
        "logged training throughput; step memory is XLA's compiled peak for one train step.",
        "",
        *lm_table(report["lm"]),
        "",
    ]
    if "bpc" in figures:
        parts += [f"![validation BPC]({figures['bpc']})", ""]
    if any(r.get("causality") for s in report["lm"].values() for r in s.values()):
        parts += [
            "## K-SSM causality suite, every seed",
            "",
            "Tests: 1 std of per-sequence mean R > 0.01; 2 forcing R to 0.1…0.9 moves the logits "
            "(mean |Δlogits| > 0.1, paired t-test p < 0.01); 3 |r(R_t, next-token entropy_t)| > 0.05 with "
            "p < 0.01; the control with the R path cut must fail test 2. ✗ marks a failed test.",
            "",
            *causality_table({k: v for k, v in report["lm"].items()}),
            "",
        ]
    if "R" in figures:
        parts += [f"![R over training]({figures['R']})", ""]
    if report.get("recall"):
        parts += [
            "## Multi-query associative recall (MQAR)",
            "",
            f"Query accuracy by sequence length (trained at the configs' length; {report['recall_batches']} "
            "evaluation batches per length).",
            "",
            *recall_table(report["recall"], report["recall_lengths"]),
            "",
        ]
        if "recall" in figures:
            parts += [f"![recall]({figures['recall']})", ""]
    parts += ["## Mechanism diagnostics", "", *diagnostics_table(report["lm"]), ""]
    return "\n".join(parts)


def readme_block(report: dict) -> str:
    """The part of the report the README quotes (between its report markers)."""
    parts = [*header(report), "", *lm_table(report["lm"]), ""]
    if any(r.get("causality") for s in report["lm"].values() for r in s.values()):
        parts += [*causality_table(report["lm"]), ""]
    if report.get("recall"):
        parts += [*recall_table(report["recall"], report["recall_lengths"]), ""]
    parts.append(f"Full report with figures and mechanism diagnostics: `{report['report_md']}`.")
    return "\n".join(parts)


def update_readme(readme: Path, name: str, block: str) -> bool:
    """Replace the text between the README's report markers for ``name``; False if they are missing."""
    text = readme.read_text(encoding="utf-8")
    begin, end = README_BEGIN.format(name=name), README_END.format(name=name)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        return False
    readme.write_text(pattern.sub(lambda _: f"{begin}\n{block}\n{end}", text), encoding="utf-8")
    return True


def doc_files(root: Path) -> list[Path]:
    """Where generated blocks may live: ``root/README.md`` and every Markdown file under ``root/docs``."""
    readme = root / "README.md"
    return ([readme] if readme.is_file() else []) + sorted((root / "docs").rglob("*.md"))


def holding_block(paths: Sequence[Path], name: str) -> list[Path]:
    """The files among ``paths`` that hold both report markers for ``name``."""
    begin, end = README_BEGIN.format(name=name), README_END.format(name=name)
    return [p for p in paths if p.is_file() and begin in (text := p.read_text(encoding="utf-8")) and end in text]


def update_docs(paths: Sequence[Path], name: str, block: str) -> list[Path]:
    """:func:`update_readme` on each of ``paths`` that holds the markers for ``name``; the files updated."""
    return [p for p in paths if p.is_file() and update_readme(p, name, block)]


def figures(report: dict, out: Path) -> dict[str, str]:
    """BPC curves (mean ± sd band), R over training, recall vs length; returns name → relative path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, str] = {}

    def band(ax, curves: list[list[tuple[int, float]]], label: str) -> None:
        steps = sorted({s for c in curves for s, _ in c})
        if not steps:
            return
        ys = np.array([[dict(c).get(s, np.nan) for s in steps] for c in curves], float)
        m, sd = np.nanmean(ys, 0), (np.nanstd(ys, 0, ddof=1) if len(ys) > 1 else np.zeros(len(steps)))
        (line,) = ax.plot(steps, m, marker="o", ms=3, label=label)
        ax.fill_between(steps, m - sd, m + sd, color=line.get_color(), alpha=0.2)

    def finish(fig, ax, name: str, xlabel: str, ylabel: str, title: str) -> None:
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=100)
        plt.close(fig)
        made[name] = f"{name}.png"

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, seeds in report["lm"].items():
        band(ax, [r["bpc_curve"] for r in seeds.values()], name)
    finish(fig, ax, "bpc", "step", "validation BPC", "validation BPC, mean ± sd over seeds")

    r_runs = {n: s for n, s in report["lm"].items() if any("R_curve" in r for r in s.values())}
    if r_runs:
        fig, ax = plt.subplots(figsize=(7, 4))
        bounds = [z[0] for z in TONE_ZONES] + [1.0]
        for (lo, sym, zname), hi in zip(TONE_ZONES, bounds[1:]):
            ax.axhline(lo, color="0.85", lw=0.8)
            ax.text(0, (lo + hi) / 2, f"{zname}", fontsize=6, color="0.5", va="center")
        for name, seeds in r_runs.items():
            band(ax, [r["R_curve"] for r in seeds.values()], name)
        ax.set_ylim(0, 1)
        finish(
            fig, ax, "R", "step", "R (training batches)", "K-SSM order parameter R over training, mean ± sd over seeds"
        )

    if report.get("recall"):
        fig, ax = plt.subplots(figsize=(6, 4))
        lengths = report["recall_lengths"]
        for name, seeds in report["recall"].items():
            ys = np.array([[r.get("recall", {}).get(str(n), np.nan) for n in lengths] for r in seeds.values()], float)
            m = np.nanmean(ys, 0)
            sd = np.nanstd(ys, 0, ddof=1) if len(ys) > 1 else np.zeros(len(lengths))
            ax.errorbar(lengths, m, yerr=sd, marker="o", capsize=3, label=name)
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1)
        finish(fig, ax, "recall", "sequence length", "query accuracy", "MQAR recall vs length")
    return made
