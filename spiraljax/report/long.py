"""``python -m spiraljax.report --budget long`` (and ``sparse``): the long-context line-up, trained on the
long-document corpus over seeds, each run followed by ``evaluate.py RUN --suite long_context``.

* ``long``: the six ``configs/*_long.yaml`` as shipped (T 512, the same batch, steps and data order):
  dense, dense + Transformer-XL cache, local attention (w 10, carried cache), Spiralformer (spiral
  attention, carried cache), Hebbian LM (carried), K-SSM v3 (carried).
* ``sparse``: spiral vs local (w = ⌈log₂T⌉ + 1, the same keys per query) vs dense at T = 1024 and 4096
  (batch 2048 / T rows, at least 1), the same steps, compared at equal steps and at equal wall time.

Runs live in ``runs/report_<name>/<entry>_s<seed>`` and are reused or resumed as for the other budgets;
the suite's numbers are kept in each run directory (``report_long_context.json``).
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spiraljax.runs import read_metrics


@dataclass(frozen=True)
class LongEntry:
    """One model of a long-context budget: a shipped config plus overrides."""

    name: str
    config: str
    what: str  # in words, for the tables
    overrides: tuple[str, ...] = ()
    group: str = ""  # equal wall time is taken within a group (sparse: one per T)


@dataclass(frozen=True)
class LongBudget:
    name: str
    lineup: str  # "long" or "sparse"
    steps: int | None  # None: the configs' own (240)
    seeds: int = 3
    lengths: tuple[int, ...] = ()  # sparse: the window lengths T
    overrides: tuple[str, ...] = ()  # every run
    suite: tuple[str, ...] = ()  # long_context --opt key=value
    description: str = ""


LONG_ENTRIES: tuple[LongEntry, ...] = (
    LongEntry("transformer", "configs/transformer_long.yaml", "dense, no carried state"),
    LongEntry("transformer_xl", "configs/transformer_xl_long.yaml", "dense + XL cache (512 keys), carried"),
    LongEntry("transformer_local", "configs/transformer_local_long.yaml", "local w 10 + cache, carried"),
    LongEntry("spiralformer", "configs/spiralformer_long.yaml", "spiral attention + cache (512 keys), carried"),
    LongEntry(
        "hebbian",
        "configs/hebbian_long.yaml",
        "fast weights + history + latent, carried",
        ("model.curriculum_steps={steps}",),
    ),
    LongEntry("kssm_v3", "configs/kssm_v3_long.yaml", "oscillator phases, carried"),
)

_TINY = (
    "model.seq_len=64",
    "model.d_model=32",
    "model.n_layers=1",
    "train.batch_size=2",
    "eval.batch_size=2",
    "eval.batches=2",
    "checkpoint.async_save=false",
)
_HEADS = ("model.n_heads=2",)
_TINY_FAMILY = {
    "transformer": _HEADS,
    "transformer_xl": _HEADS,
    "spiralformer": _HEADS,
    "transformer_local": _HEADS + ("model.window=4",),
    "hebbian": _HEADS + ("model.window=4", "model.head_hidden=16", "model.memory_chunk=4"),
    "kssm_v3": ("model.n_oscillators=16", "model.n_groups=2", "model.n_harmonics=3", "model.readout_hidden=32"),
}
_SMOKE_SUITE = (
    "docs=2",
    "doc_bytes=2048",
    "buckets=0,256,1024",
    "lengths=32,64,128",
    "extrap_bytes=512",
    "probe_rows=2",
    "pairs=1",
    "distances=1,2",
    "batch=4",
)

LONG_BUDGETS: dict[str, LongBudget] = {
    "long": LongBudget(
        "long",
        "long",
        None,
        seeds=3,
        description="the six *_long configs as shipped (T 512, 240 steps × 4 rows) + the "
        "long_context suite, 3 seeds (27 min measured on 2 CPU cores)",
    ),
    "long-smoke": LongBudget(
        "long-smoke",
        "long",
        4,
        seeds=2,
        overrides=_TINY,
        suite=_SMOKE_SUITE,
        description="the long line-up at tiny sizes, 4 steps: checks the pipeline",
    ),
    "sparse": LongBudget(
        "sparse",
        "sparse",
        120,
        seeds=3,
        lengths=(1024, 4096),
        suite=("lengths=", "probe_rows=0", "docs=2"),
        description="spiral vs local (same keys per query) vs dense at T 1024 and 4096, 120 "
        "steps of 2048-4096 tokens, equal steps and equal wall time, 3 seeds (≈2 h "
        "on 2 CPU cores, 85 % of it dense attention at T 4096)",
    ),
    "sparse-smoke": LongBudget(
        "sparse-smoke",
        "sparse",
        4,
        seeds=1,
        lengths=(64, 128),
        overrides=tuple(o for o in _TINY if not o.startswith("model.seq_len")),
        suite=("lengths=", "probe_rows=0", "docs=2", "doc_bytes=1024", "buckets=0,256"),
        description="the sparse comparison at tiny sizes, 4 steps: checks the pipeline",
    ),
}


def fair_window(t: int) -> int:
    """⌈log₂T⌉ + 1: the keys per query of spiral attention at length T (itself and the keys 2ᵏ back)."""
    return math.ceil(math.log2(t)) + 1


def entries(budget: LongBudget) -> tuple[LongEntry, ...]:
    if budget.lineup == "long":
        return LONG_ENTRIES
    out = []
    for t in budget.lengths:
        rows = f"train.batch_size={max(1, 2048 // t)}"
        out += [
            LongEntry(
                f"spiralformer_T{t}",
                "configs/spiralformer_long.yaml",
                f"spiral attention + cache, T {t}",
                (f"model.seq_len={t}", rows),
                f"T{t}",
            ),
            LongEntry(
                f"transformer_local_T{t}",
                "configs/transformer_local_long.yaml",
                f"local w {fair_window(t)} + cache, T {t}",
                (f"model.seq_len={t}", rows, f"model.window={fair_window(t)}"),
                f"T{t}",
            ),
            LongEntry(
                f"transformer_T{t}",
                "configs/transformer_long.yaml",
                f"dense, T {t}",
                (f"model.seq_len={t}", rows),
                f"T{t}",
            ),
        ]
    return tuple(out)


def entry_names(budget: LongBudget) -> set[str]:
    return {e.name for e in entries(budget)}


def run_overrides(entry: LongEntry, budget: LongBudget, steps: int, seed: int) -> list[str]:
    """Overrides that turn the entry's config into this budget's run for ``seed``."""
    base = next(e for e in LONG_ENTRIES if e.config == entry.config).name
    sixth = max(steps // 6, 1)
    out = [
        f"train.steps={steps}",
        f"train.eval_every={sixth}",
        f"checkpoint.every={sixth}",
        f"train.log_every={max(min(10, sixth), 1)}",
        "train.progress=false",
        f"train.seed={seed}",
    ]
    if budget.steps is not None:
        out.append(f"train.warmup_steps={min(24, steps // 10)}")
    out += list(budget.overrides)
    if budget.overrides:  # a tiny budget: the family's tiny sizes too
        out += list(_TINY_FAMILY.get(base, ()))
    out += [o.replace("{steps}", str(steps)) for o in entry.overrides]
    return out


def curve_with_seconds(rows: list[dict]) -> list[tuple[int, float, float]]:
    """``(step, train_seconds, val BPC)`` of every evaluation row."""
    return [
        (int(r["step"]), float(r["train_seconds"]), float(r["bpc"]))
        for r in rows
        if r.get("kind") == "eval" and "train_seconds" in r and "bpc" in r
    ]


def bpc_at_seconds(points: list[tuple[int, float, float]], seconds: float) -> float | None:
    """Val BPC at ``seconds`` of training, linear between evaluations; None before the first one."""
    import numpy as np

    if not points or seconds < points[0][1] - 1e-9:
        return None
    return float(np.interp(seconds, [p[1] for p in points], [p[2] for p in points]))


def equal_time(runs: dict[str, dict[int, dict]], groups: dict[str, str]) -> dict[str, float]:
    """Per group: the shortest total training time (train_seconds at the last evaluation) of its runs."""
    out: dict[str, float] = {}
    for name, seeds in runs.items():
        for r in seeds.values():
            if r["curve"]:
                g = groups[name]
                out[g] = min(out.get(g, math.inf), r["curve"][-1][1])
    return out


def build_long_report(
    budget: LongBudget,
    seeds: int | None = None,
    name: str | None = None,
    out_dir: str | Path = "reports",
    runs_dir: str | Path = "runs",
    only: set[str] | None = None,
    command: str | None = None,
    log=print,
) -> dict[str, Any]:
    """Train/reuse every run of ``budget``, run the long_context suite on each, write the report."""
    from spiraljax.report import _cached, _compilation_cache, render_long, runner
    from spiraljax.runinfo import run_info

    name = name or budget.name
    _compilation_cache(Path(runs_dir) / ".jax_cache")
    seed_list = list(range(seeds or budget.seeds))
    root, out = Path(runs_dir) / f"report_{name}", Path(out_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    picked = [e for e in entries(budget) if only is None or e.name in only]
    suite_opts = dict(o.split("=", 1) for o in budget.suite)
    log(f"report {name!r}: budget {budget.name}, seeds {seed_list}, runs in {root}")
    report: dict[str, Any] = {
        "command": command or "python -m spiraljax.report " + shlex.join(sys.argv[1:]),
        "budget": asdict(budget),
        "seeds": seed_list,
        "provenance": run_info(),
        "report_md": str(out / "report.md"),
        "entries": {e.name: {"what": e.what, "config": e.config, "group": e.group} for e in picked},
        "runs": {},
    }
    for entry in picked:
        report["runs"][entry.name] = {}
        warm = False
        for seed in seed_list:
            steps = budget.steps or runner.resolve(entry.config, []).train.steps
            cfg = runner.resolve(entry.config, run_overrides(entry, budget, steps, seed))
            run = root / f"{entry.name}_s{seed}"
            if not warm and not runner.read_status(run).get("finished"):
                warm_up(cfg, root / f"warm_{entry.name}", log)
                warm = True
            status = runner.ensure_trained(cfg, run, log)
            numbers = runner.run_numbers(run, status)
            numbers["curve"] = curve_with_seconds(read_metrics(run / "metrics.jsonl"))
            numbers["carry_state"] = cfg.train.carry_state
            numbers["steps"] = steps
            log(f"  long_context suite on {run}")
            numbers["long_context"] = _cached(
                run,
                "long_context",
                {"options": suite_opts, "checkpoint": "latest", "config": cfg.to_dict()},
                lambda: _long_suite(run, suite_opts),
            )
            report["runs"][entry.name][seed] = numbers
    shas = {r["long_context"].get("data_sha256") for s in report["runs"].values() for r in s.values()}
    report["data_sha256"] = sorted(x for x in shas if x)
    groups = {e.name: e.group for e in picked}
    report["equal_time_s"] = equal_time(report["runs"], groups)
    for entry_name, seeds_ in report["runs"].items():
        for r in seeds_.values():
            r["bpc_at_equal_time"] = bpc_at_seconds(r["curve"], report["equal_time_s"].get(groups[entry_name], 0.0))
    figs = render_long.figures(report, out)
    (out / "report.md").write_text(render_long.markdown(report, figs), encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float), encoding="utf-8")
    log(f"wrote {out / 'report.md'}, {out / 'report.json'} and {', '.join(figs.values())}")
    return report


def warm_up(cfg, where: Path, log=print) -> None:
    """Compile ``cfg``'s train step into XLA's persistent cache with a one-step run (deleted after), so
    every run of the report starts from a cached executable and its ``train_seconds`` is training time,
    not compilation (the step's program does not depend on the seed)."""
    import shutil

    from spiraljax.experiment import run as run_experiment

    log(f"  warm-up {where} (one step: compiles the train step into the cache)")
    shutil.rmtree(where, ignore_errors=True)
    run_experiment(cfg, where, stop_at=1)
    shutil.rmtree(where, ignore_errors=True)


def _long_suite(run: Path, options: dict[str, str]) -> dict:
    from spiraljax.eval.long_context import long_context
    from spiraljax.eval.suites import EvalContext

    return long_context(EvalContext(run, "latest", 0, dict(options)), plots=True)
