"""The long-context report's tables, figures and generated block (``--budget long`` / ``sparse``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from spiraljax.report.render import _num, fmt_ms, mean_sd, trained_at


def _seeds(values: dict[Any, float | None], digits: int = 3) -> str:
    return ", ".join(f"{s}: {_num(v, digits)}" for s, v in values.items())


def _suite(r: dict) -> dict:
    return r.get("long_context") or {}


def header(report: dict) -> list[str]:
    b, info = report["budget"], report["provenance"]
    v, g = info["versions"], info["git"]
    commit = (g.get("commit") or "no git")[:10] + (" (dirty tree)" if g.get("dirty") else "")
    runs = [r for seeds in report["runs"].values() for r in seeds.values()]
    steps = sorted({r["steps"] for r in runs})
    return [
        f"Command: `{report['command']}` — budget `{b['name']}` ({b['description']}); "
        f"{', '.join(map(str, steps))} steps per model; seeds {', '.join(map(str, report['seeds']))}; "
        "mean ± sample sd over seeds, then every seed.",
        f"Corpus: longdocs/python, SHA-256 {', '.join(report['data_sha256']) or '—'}.",
        f"Made with commit {commit}, Python {v['python']}, jax {v['jax']}, jaxlib {v['jaxlib']}, "
        f"flax {v['flax']} on "
        f"{info['device']['platform']} × {info['device']['device_count']} ({info['device']['machine']}); "
        f"the runs were trained at commit {trained_at(runs)} (each run's `run.json`).",
    ]


def bpc_table(report: dict) -> list[str]:
    """Val BPC at equal steps and at equal wall time (per group), with params, carry and throughput."""
    lines = [
        "| model | what | params | steps | val BPC, equal steps | per seed | train s | val BPC at "
        "equal wall time | per seed | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, seeds in report["runs"].items():
        runs = list(seeds.values())
        group = report["entries"][name]["group"]
        t = report["equal_time_s"].get(group)
        params = runs[0].get("params")
        lines.append(
            f"| {name} | {report['entries'][name]['what']} | {_num(params / 1e6 if params else None, 2)} M | "
            f"{runs[0]['steps']} | **{fmt_ms([r['final_bpc'] for r in runs])}** | "
            f"{_seeds({s: r['final_bpc'] for s, r in seeds.items()})} | "
            f"{_num(mean_sd([r['curve'][-1][1] if r['curve'] else None for r in runs])[0], 0)} | "
            f"**{fmt_ms([r['bpc_at_equal_time'] for r in runs])}** (at {_num(t, 0)} s) | "
            f"{_seeds({s: r['bpc_at_equal_time'] for s, r in seeds.items()})} | "
            f"{_num(mean_sd([r['tokens_per_s'] for r in runs])[0], 0)} |"
        )
    return lines


def bucket_table(report: dict) -> list[str]:
    lines = [
        "| model | bytes at offset | tokens | carried | reset | carried − reset | carried − reset per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, seeds in report["runs"].items():
        suites = {s: _suite(r) for s, r in seeds.items() if _suite(r)}
        if not suites:
            continue
        first = next(iter(suites.values()))
        for label, b in [*first["position"]["buckets"].items(), ("all", first["position"]["all"])]:
            if not b["tokens"]:
                continue

            def pick(k: str, label: str = label) -> dict:
                return {
                    s: (d["position"]["all"] if label == "all" else d["position"]["buckets"][label])[k]
                    for s, d in suites.items()
                }

            lines.append(
                f"| {name} | {label} | {b['tokens']:,} | {fmt_ms(list(pick('carried').values()))} | "
                f"{fmt_ms(list(pick('reset').values()))} | **{fmt_ms(list(pick('gap').values()))}** | "
                f"{_seeds(pick('gap'))} |"
            )
    return lines


def extrapolation_table(report: dict) -> list[str]:
    rows, lengths = [], []
    for name, seeds in report["runs"].items():
        exs = [_suite(r).get("extrapolation", {}) for r in seeds.values()]
        exs = [x for x in exs if x.get("lengths")]
        if not exs:
            continue
        lengths = sorted(set(lengths) | set(exs[0]["lengths"]))
        first = exs[0]["by_length"][str(exs[0]["lengths"][0])]["carried"]["tokens"]
        late = [k for k, n in first.items() if n][-1]
        for part in ("all", late):
            for key, words in (("carried", "with cache"), ("reset", "no cache")):

                def cell(n, exs=exs, key=key, part=part):
                    vals = [
                        (
                            x["by_length"][str(n)][key]["all"]
                            if part == "all"
                            else x["by_length"][str(n)][key]["buckets"][part]
                        )
                        if str(n) in x["by_length"]
                        else None
                        for x in exs
                    ]
                    return fmt_ms(vals)

                rows.append((name, "all bytes" if part == "all" else f"offsets {part}", words, cell))
    if not rows:
        return []
    lines = [
        "| model | bytes | cache | " + " | ".join(f"T = {n}" for n in lengths) + " |",
        "|---|---|---|" + "---|" * len(lengths),
    ]
    for name, part, words, cell in rows:
        lines.append(f"| {name} | {part} | {words} | " + " | ".join(cell(n) for n in lengths) + " |")
    return lines


def recall_table(report: dict) -> list[str]:
    lines = [
        "| model | windows later | queries/seed | carried: first byte | all bytes | reset: first byte | all bytes "
        "| chance first / all | guess among present first / all | carried first per seed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    any_row = False
    for name, seeds in report["runs"].items():
        rcs = {s: _suite(r).get("recall", {}) for s, r in seeds.items()}
        rcs = {s: x for s, x in rcs.items() if x.get("by_distance")}
        if not rcs:
            continue
        first = next(iter(rcs.values()))
        for d in first["by_distance"]:
            at = {s: x["by_distance"][d] for s, x in rcs.items()}
            x0 = at[next(iter(at))]
            vals = lambda a, k: [v[a][k] for v in at.values()]  # noqa: E731
            lines.append(
                f"| {name} | {d} | {x0['queries']} | **{fmt_ms(vals('carried', 'first'))}** | "
                f"{fmt_ms(vals('carried', 'all'))} | {fmt_ms(vals('reset', 'first'))} | "
                f"{fmt_ms(vals('reset', 'all'))} | {x0['chance_first']:.3f} / {x0['chance_all']:.1e} | "
                f"{fmt_ms([v['guess_first'] for v in at.values()])} / "
                f"{fmt_ms([v['guess_all'] for v in at.values()])} | "
                f"{_seeds({s: v['carried']['first'] for s, v in at.items()})} |"
            )
            any_row = True
    return lines if any_row else []


def _sections(report: dict, figs: dict[str, str] | None) -> list[str]:
    times = ", ".join(f"{g or 'all models'}: {t:.0f} s" for g, t in report["equal_time_s"].items())
    parts = [
        "**Validation BPC at equal steps and at equal wall time.** Equal steps: the last evaluation. Equal "
        "wall time: each run's validation curve (six evaluations) against its `train_seconds` (training "
        "wall time, validation excluded; every run's train step was compiled beforehand by a one-step warm-up "
        "run into XLA's persistent cache, so this is training, not compilation), interpolated linearly at "
        "the shortest run's total "
        f"training time ({times}); — where that comes before a run's first evaluation.",
        "",
        *bpc_table(report),
        "",
    ]
    if figs and "seconds" in figs:
        parts += [f"![BPC vs seconds]({figs['seconds']})", ""]
    buckets = bucket_table(report)
    if len(buckets) > 2:
        parts += [
            "**BPC by position in the document** (`evaluate.py RUN --suite long_context`): validation "
            "documents read in windows of the trained length with the state carried, and with every "
            "window read alone (reset); carried − reset < 0 is what the carried state is worth.",
            "",
            *buckets,
            "",
        ]
        for key, alt in (("position", "BPC by position"), ("gap", "carried − reset")):
            if figs and key in figs:
                parts += [f"![{alt}]({figs[key]})", ""]
    extrap = extrapolation_table(report)
    if extrap:
        parts += [
            "**Length extrapolation** (attention families): trained at T = 512, read in windows of T with "
            "the trained cache carried and without it; all bytes and the last position bucket.",
            "",
            *extrap,
            "",
        ]
        if figs and "extrapolation" in figs:
            parts += [f"![extrapolation]({figs['extrapolation']})", ""]
    recall = recall_table(report)
    if recall:
        parts += [
            "**Long-range recall**: identifiers defined in the first window, queried d windows later; "
            "accuracy on the value bytes (first byte; all bytes, teacher-forced). Reset is the control "
            "that must sit at chance.",
            "",
            *recall,
            "",
        ]
        if figs and "recall" in figs:
            parts += [f"![recall]({figs['recall']})", ""]
    return parts


def markdown(report: dict, figs: dict[str, str]) -> str:
    return "\n".join(["# spiraljax long-context report", "", *header(report), "", *_sections(report, figs)])


def readme_block(report: dict) -> str:
    """The block of docs/results/long_context.md (figures are in the report directory)."""
    return "\n".join(
        [*header(report), "", *_sections(report, None), f"Full report with figures: `{report['report_md']}`."]
    )


def figures(report: dict, out: Path) -> dict[str, str]:
    """BPC vs seconds, BPC by position (carried and reset), carried − reset, extrapolation, recall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, str] = {}

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=100)
        plt.close(fig)
        made[name] = f"{name}.png"

    def mean(rows: list[list[float | None]]) -> tuple[np.ndarray, np.ndarray]:
        ys = np.array([[np.nan if v is None else v for v in r] for r in rows], float)
        sd = np.nanstd(ys, 0, ddof=1) if len(ys) > 1 else np.zeros(ys.shape[1])
        return np.nanmean(ys, 0), sd

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, seeds in report["runs"].items():
        color = None  # the first seed's line picks it; the others reuse it
        for i, r in enumerate(seeds.values()):
            if r["curve"]:
                (line,) = ax.plot(
                    [p[1] for p in r["curve"]],
                    [p[2] for p in r["curve"]],
                    marker="o",
                    ms=3,
                    lw=1,
                    label=name if i == 0 else None,
                    color=None if i == 0 else color,
                )
                color = line.get_color()
    for t in report["equal_time_s"].values():
        ax.axvline(t, color="0.6", lw=0.8, ls=":")
    ax.set(xlabel="training seconds (train_seconds)", ylabel="validation BPC", title="BPC vs wall time, every seed")
    ax.legend(fontsize=7)
    save(fig, "seconds")

    suites = {n: [_suite(r) for r in s.values() if _suite(r)] for n, s in report["runs"].items()}
    suites = {n: s for n, s in suites.items() if s}
    if suites:
        labels = [k for k, b in next(iter(suites.values()))[0]["position"]["buckets"].items() if b["tokens"]]
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, ss in suites.items():
            for key, style in (("carried", "-o"), ("reset", "--")):
                m, _ = mean([[s["position"]["buckets"][k][key] for k in labels] for s in ss])
                (line,) = ax.plot(
                    labels, m, style, label=f"{name} {key}", **({"color": color} if key == "reset" else {})
                )
                color = line.get_color()
        ax.set(xlabel="byte offset in the document", ylabel="BPC", title="BPC by position (mean over seeds)")
        ax.legend(fontsize=6, ncol=2)
        save(fig, "position")
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.8 / len(suites)
        for i, (name, ss) in enumerate(suites.items()):
            m, sd = mean([[s["position"]["buckets"][k]["gap"] for k in labels] for s in ss])
            ax.bar(np.arange(len(labels)) + i * width, m, width, yerr=sd, label=name, capsize=2)
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels)
        ax.axhline(0, color="0.4", lw=0.8)
        ax.set(
            xlabel="byte offset in the document", ylabel="carried − reset BPC", title="what the carried state is worth"
        )
        ax.legend(fontsize=7)
        save(fig, "gap")
    extrap = {
        n: [s["extrapolation"] for s in ss if s.get("extrapolation", {}).get("lengths")] for n, ss in suites.items()
    }
    extrap = {n: e for n, e in extrap.items() if e}
    if extrap:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, exs in extrap.items():
            lengths = exs[0]["lengths"]
            for key, style in (("carried", "-o"), ("reset", "--s")):
                m, sd = mean(
                    [
                        [x["by_length"][str(n)][key]["all"] if str(n) in x["by_length"] else None for n in lengths]
                        for x in exs
                    ]
                )
                ax.errorbar(
                    lengths,
                    m,
                    yerr=sd,
                    fmt=style,
                    capsize=2,
                    label=f"{name} {'cache' if key == 'carried' else 'no cache'}",
                )
        ax.set_xscale("log", base=2)
        ax.set(xlabel="evaluation window length", ylabel="BPC", title="length extrapolation (trained at T = 512)")
        ax.legend(fontsize=6, ncol=2)
        save(fig, "extrapolation")
    recalls = {n: [s["recall"] for s in ss if s.get("recall", {}).get("by_distance")] for n, ss in suites.items()}
    recalls = {n: r for n, r in recalls.items() if r}
    if recalls:
        fig, ax = plt.subplots(figsize=(7, 4))
        ds = [int(d) for d in next(iter(recalls.values()))[0]["by_distance"]]
        for name, rcs in recalls.items():
            m, sd = mean([[x["by_distance"][str(d)]["carried"]["first"] for d in ds] for x in rcs])
            line = ax.errorbar(ds, m, yerr=sd, fmt="-o", capsize=2, label=f"{name} carried")
            m, _ = mean([[x["by_distance"][str(d)]["reset"]["first"] for d in ds] for x in rcs])
            ax.plot(ds, m, "--", color=line[0].get_color(), lw=0.8)
        first = next(iter(recalls.values()))[0]["by_distance"]
        ax.plot(ds, [first[str(d)]["chance_first"] for d in ds], ":", color="0.3", label="chance")
        ax.plot(ds, [first[str(d)]["guess_first"] for d in ds], "-.", color="0.6", label="guess among present values")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1)
        ax.set(
            xlabel="windows between definition and query",
            ylabel="first value byte accuracy",
            title="long-range recall (dashed: state reset)",
        )
        ax.legend(fontsize=7)
        save(fig, "recall")
    return made
