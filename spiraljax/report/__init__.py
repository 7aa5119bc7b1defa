"""``python -m spiraljax.report``: every family × seeds → ``reports/<name>/report.md``, ``report.json``, PNGs.

Trains the dense baseline and every autoregressive family on TinyShakespeare at equal steps and
batch for N seeds, the MQAR recall models, and runs the K-SSM causality suite on every K-SSM seed.
``--budget long`` / ``sparse`` train the long-context line-up instead (:mod:`spiraljax.report.long`).
Run directories live in ``runs/report_<name>/`` and are reused: re-running skips finished runs and
resumes unfinished ones, so an interrupted report continues. ``--readme`` rewrites the generated block
(between ``<!-- report:<name>:begin -->`` and ``<!-- report:<name>:end -->``) wherever it lives: in the
files given (``--readme README.md``), or, with none given, in README.md and docs/**/*.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from spiraljax.report.lineup import BUDGETS, LM_ENTRIES, RECALL_ENTRIES, Budget, Entry, entry_overrides

__all__ = ["BUDGETS", "build_report", "main"]


def _cached(run: Path, name: str, key: dict, compute) -> Any:
    """``compute()`` once per (run, key): the value is kept in ``run/report_<name>.json``."""
    path = run / f"report_{name}.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            return saved["value"]
    except (OSError, json.JSONDecodeError):
        pass
    value = compute()
    path.write_text(json.dumps({"key": key, "value": value}, default=float), encoding="utf-8")
    return value


def _compilation_cache(path: Path) -> None:
    """Reuse compiled steps across seeds and re-runs (same shapes → same executable)."""
    import jax

    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path.resolve()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _suite(run: Path, suite: str, options: dict[str, str]) -> dict:
    from spiraljax.eval.suites import EvalContext, get_suite

    res = get_suite(suite).fn(EvalContext(run, "best", 0, dict(options)))
    return {**res.data, "passed": res.passed}


def _train_entries(
    entries: tuple[Entry, ...], budget: Budget, steps: int | None, seeds: list[int], root: Path, kind: str, log
) -> dict[str, dict[int, dict]]:
    from spiraljax.report import runner

    out: dict[str, dict[int, dict]] = {}
    for entry in entries:
        out[entry.name] = {}
        memory = None
        for seed in seeds:
            cfg = runner.resolve(entry.config, entry_overrides(entry, budget, steps, seed))
            run = root / f"{kind}_{entry.name}_s{seed}"
            status = runner.ensure_trained(cfg, run, log)
            numbers = runner.run_numbers(run, status)
            if memory is None:
                memory = _cached(run, "step_memory", cfg.to_dict(), lambda: runner.step_memory_mb(cfg))
            numbers["step_memory_mb"] = memory
            if kind == "lm" and entry.causality:
                opts = {"sequences": str(budget.causality_sequences)}
                log(f"  causality suite on {run}")
                numbers["causality"] = _cached(run, "causality", opts, lambda: _suite(run, "causality", opts))
            if kind == "recall":
                opts = {"lengths": ",".join(map(str, budget.recall_lengths)), "batches": str(budget.recall_batches)}
                log(f"  recall suite on {run}")
                data = _cached(run, "recall", opts, lambda: _suite(run, "recall", opts))
                numbers["recall"] = next(iter(data["accuracy"].values()))
            out[entry.name][seed] = numbers
    return out


def build_report(
    budget: Budget,
    seeds: int | None = None,
    name: str | None = None,
    out_dir: str | Path = "reports",
    runs_dir: str | Path = "runs",
    only: set[str] | None = None,
    recall: bool = True,
    command: str | None = None,
    log=print,
) -> dict:
    """Train/reuse every run of ``budget`` and write the report; returns the report dict."""
    from spiraljax.report import render
    from spiraljax.runinfo import run_info

    name = name or budget.name
    _compilation_cache(Path(runs_dir) / ".jax_cache")
    n_seeds = seeds or budget.seeds
    seed_list = list(range(n_seeds))
    recall_seeds = list(range(min(n_seeds, budget.recall_seeds)))
    root = Path(runs_dir) / f"report_{name}"
    out = Path(out_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    pick = lambda entries: tuple(e for e in entries if only is None or e.name in only)  # noqa: E731
    log(f"report {name!r}: budget {budget.name}, seeds {seed_list}, runs in {root}")
    report: dict[str, Any] = {
        "command": command or "python -m spiraljax.report " + shlex.join(sys.argv[1:]),
        "budget": asdict(budget),
        "seeds": seed_list,
        "recall_seeds": recall_seeds,
        "provenance": run_info(),
        "recall_lengths": list(budget.recall_lengths),
        "recall_batches": budget.recall_batches,
        "report_md": str(out / "report.md"),
    }
    report["lm"] = _train_entries(pick(LM_ENTRIES), budget, budget.steps, seed_list, root, "lm", log)
    report["recall"] = (
        _train_entries(pick(RECALL_ENTRIES), budget, budget.recall_steps, recall_seeds, root, "recall", log)
        if recall
        else {}
    )
    figs = render.figures(report, out)
    (out / "report.md").write_text(render.markdown(report, figs), encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float), encoding="utf-8")
    log(f"wrote {out / 'report.md'}, {out / 'report.json'} and {', '.join(figs.values())}")
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m spiraljax.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    from spiraljax.report.long import LONG_BUDGETS
    from spiraljax.report.recall_state import RECALL_BUDGETS

    every = {**BUDGETS, **LONG_BUDGETS, **RECALL_BUDGETS}
    p.add_argument(
        "--budget",
        choices=sorted(every),
        default="small",
        help="; ".join(f"{b.name}: {b.description}" for b in every.values()).replace("%", "%%"),
    )
    p.add_argument("--seeds", type=int, help="number of seeds (default: the budget's, 3)")
    p.add_argument("--name", help="report name (default: the budget's name)")
    p.add_argument("--out", default="reports", help="where reports/<name>/ is written (default: reports)")
    p.add_argument("--runs", default="runs", help="where runs/report_<name>/ run directories live (default: runs)")
    p.add_argument("--only", help="comma-separated entry names, e.g. transformer,kssm_v3")
    p.add_argument("--no-recall", action="store_true", help="skip the MQAR recall models")
    p.add_argument(
        "--readme",
        nargs="*",
        metavar="FILE",
        help="rewrite the <!-- report:<name>:begin/end --> block in these Markdown files (with no FILE: "
        "wherever it is in README.md and docs/**/*.md under the current directory)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spiraljax.host_memory import reuse_host_memory

    reuse_host_memory()  # before any JAX computation: see spiraljax/host_memory.py
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    from spiraljax.errors import USER_ERRORS
    from spiraljax.report import render

    if args.seeds is not None and args.seeds < 1:
        print("error: --seeds must be ≥ 1", file=sys.stderr)
        return 2
    from spiraljax.report import recall_state
    from spiraljax.report.long import LONG_BUDGETS, build_long_report, entry_names

    long = args.budget in LONG_BUDGETS
    mqar = args.budget in recall_state.RECALL_BUDGETS
    budget = (
        LONG_BUDGETS[args.budget]
        if long
        else recall_state.RECALL_BUDGETS[args.budget]
        if mqar
        else BUDGETS[args.budget]
    )
    names = (
        entry_names(budget)
        if long
        else recall_state.entry_names()
        if mqar
        else {e.name for e in LM_ENTRIES + RECALL_ENTRIES}
    )
    only = set(args.only.split(",")) if args.only else None
    if only and only - names:
        print(f"error: --only: unknown entries {sorted(only - names)} (choose from {sorted(names)})", file=sys.stderr)
        return 2
    targets: list[Path] = []
    if args.readme is not None:  # checked before the runs: a missing block must not cost an hour of training
        name = args.name or budget.name
        targets = render.holding_block([Path(f) for f in args.readme] or render.doc_files(Path.cwd()), name)
        if not targets:
            where = ", ".join(args.readme) or "README.md and docs/"
            print(
                f"error: {where}: no <!-- report:{name}:begin --> … <!-- report:{name}:end --> block", file=sys.stderr
            )
            return 2
    try:
        if long:
            report = build_long_report(budget, args.seeds, args.name, args.out, args.runs, only)
        elif mqar:
            report = recall_state.build_recall_report(budget, args.seeds, args.name, args.out, args.runs, only)
        else:
            report = build_report(budget, args.seeds, args.name, args.out, args.runs, only, not args.no_recall)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"stopped: {err or 'interrupted'}", file=sys.stderr)
        return 130
    if targets:
        from spiraljax.report import render_long, render_recall

        block = (
            render_long.readme_block(report)
            if long
            else render_recall.block(report)
            if mqar
            else render.readme_block(report)
        )
        updated = render.update_docs(targets, args.name or budget.name, block)
        print(f"updated {', '.join(map(str, updated))}")
    return 0
