"""``python -m spiraljax.report --budget recall`` (and ``recall-smoke``): MQAR recall vs state size.

The Zoology protocol (issue 25 §2) at one shared budget: every model of the line-up is trained on MQAR
(``data.source: mqar``) at length ``T_train`` for the same steps, batch, learning rate and data order,
then scored on fresh batches at each cell ``(T, pairs)`` of the grid, on all queries and on *first*
queries (each key's first query: its answer is only in the key–value pairs).

State size is the bytes of one sequence's carried state at length T: every leaf of
``model.initial_state(1)`` of the model's config at ``seq_len = T`` (attention: the key/value cache of
``T`` slots per layer, plus its ``valid``/``prev_key`` leaves; recurrent models: fast weights,
history window, phases …). Runs are trained in this process, not through ``train.py``: each run's
numbers are kept in ``runs/report_<name>/<entry>_s<seed>.json`` (no checkpoints) and reused.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RecallEntry:
    """One model of the recall line-up: its family's overrides on top of the budget's common ones."""

    name: str
    what: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class RecallBudget:
    name: str
    steps: int
    train_length: int
    train_pairs: tuple[int, int]  # (min, max) pairs per training sequence
    cells: tuple[tuple[int, int], ...]  # (T, pairs) evaluation grid
    seeds: int = 3
    batch: int = 16
    lr: float = 3e-3
    eval_batches: int = 2  # batches of ``batch`` sequences per cell
    d_model: int = 64
    n_layers: int = 2
    description: str = ""


def _hebbian(rule: str, patch: int, window: int, alpha: float = 1.0) -> tuple[str, ...]:
    return (
        "model.family=hebbian_lm",
        f"model.patch={patch}",
        f"model.window={window}",
        f"model.memory_rule={rule}",
        "model.reasoning_steps=1",
        "model.head_hidden=32",
        "model.memory_chunk=32",
        f"model.plasticity_stages=[[1.0,{alpha}]]",
        "model.curriculum_steps={steps}",
    )


RECALL_LINEUP: tuple[RecallEntry, ...] = (
    RecallEntry("transformer", "dense attention, smeared keys (KV cache of T)", ("model.family=transformer",)),
    RecallEntry(
        "spiralformer",
        "spiral attention only, plain keys (KV cache of T)",
        (
            "model.family=spiralformer",
            "model.soma=false",
            "model.silence.key_mask=false",
            "model.silence.gate=none",
            "model.breath.enabled=false",
            "model.memory.enabled=false",
        ),
    ),
    RecallEntry(
        "fw_hebbian", "fast weights, hebbian rule, byte level (patch 1, attention window 2)", _hebbian("hebbian", 1, 2)
    ),
    RecallEntry("fw_shifted", "fast weights, shifted rule (k_{t-1} ⊗ v_t), byte level", _hebbian("shifted", 1, 2)),
    RecallEntry("fw_delta", "fast weights, delta rule, byte level", _hebbian("delta", 1, 2)),
    RecallEntry(
        "hebbian_lm_p4", "the patched Hebbian LM (patch 4, window 16 patches, hebbian rule)", _hebbian("hebbian", 4, 16)
    ),
    RecallEntry(
        "kssm_v3",
        "K-SSM v3 (oscillator phases)",
        (
            "model.family=kssm_v3",
            "model.n_oscillators=64",
            "model.n_groups=4",
            "model.n_harmonics=3",
            "model.readout_hidden=64",
        ),
    ),
)

RECALL_BUDGETS: dict[str, RecallBudget] = {
    "recall": RecallBudget(
        "recall",
        steps=240,
        train_length=256,
        train_pairs=(4, 32),
        cells=((256, 4), (256, 16), (256, 64), (1024, 16)),
        seeds=3,
        description="MQAR recall vs state size: 7 models (d 64, 2 layers) × 3 seeds, 240 steps × "
        "16 rows × T 256, 4-32 pairs; scored at T 256 (4/16/64 pairs) and T 1024 "
        "(16 pairs)",
    ),
    "recall-smoke": RecallBudget(
        "recall-smoke",
        steps=3,
        train_length=32,
        train_pairs=(2, 4),
        cells=((32, 2), (32, 4), (64, 4)),
        seeds=2,
        batch=4,
        eval_batches=1,
        d_model=16,
        n_layers=1,
        description="the recall line-up at tiny sizes, 3 steps: checks the pipeline",
    ),
}


def entry_names() -> set[str]:
    return {e.name for e in RECALL_LINEUP}


def run_overrides(entry: RecallEntry, budget: RecallBudget, seed: int, length: int | None = None) -> list[str]:
    """The config overrides of ``entry``'s run (``length``: the model's ``seq_len``, default T_train)."""
    heads = 2
    out = [
        "model.vocab_size=256",
        f"model.seq_len={length or budget.train_length}",
        f"model.d_model={budget.d_model}",
        f"model.n_layers={budget.n_layers}",
        "data.source=mqar",
        f"data.min_pairs={budget.train_pairs[0]}",
        f"data.max_pairs={budget.train_pairs[1]}",
        f"train.steps={budget.steps}",
        f"train.batch_size={budget.batch}",
        f"train.lr={budget.lr}",
        f"train.warmup_steps={max(1, budget.steps // 10)}",
        f"train.seed={seed}",
    ]
    family = next(o for o in entry.overrides if o.startswith("model.family="))
    out.insert(0, family)
    if not entry.name.startswith("kssm"):
        out.append(f"model.n_heads={heads}")
    return out + [o.replace("{steps}", str(budget.steps)) for o in entry.overrides if o != family]


def state_bytes(model_cfg) -> int:
    """Bytes of one sequence's carried state: every leaf of ``initial_state(1)`` (shapes only, nothing run)."""
    import jax

    model = model_cfg.build()
    shapes = jax.eval_shape(lambda: model.initial_state(1))
    return int(
        sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(shapes))
    )


def score(pred: np.ndarray, batch: dict) -> dict[str, float]:
    """Hits and totals on all queries and on first queries: ``{"hits", "total", "first_hits", "first_total"}``
    (argmax ``pred [B, T]`` against ``batch["targets"]`` where ``batch["mask"]``)."""
    from spiraljax.eval.recall import first_query_mask

    right = pred == batch["targets"]
    first = first_query_mask(batch["inputs"], batch["mask"])
    return {
        "hits": float(np.sum(right * batch["mask"])),
        "total": float(np.sum(batch["mask"])),
        "first_hits": float(np.sum(right * first)),
        "first_total": float(np.sum(first)),
    }


def train_and_score(entry: RecallEntry, budget: RecallBudget, seed: int, log=print) -> dict[str, Any]:
    """Train ``entry`` for ``budget.steps`` on MQAR and score every cell; also the state bytes per cell."""
    import jax
    import jax.numpy as jnp

    from spiraljax import config
    from spiraljax.data.recall import mqar_batch
    from spiraljax.eval.recall import guess_present_accuracy
    from spiraljax.runinfo import git_state
    from spiraljax.train.setup import setup

    cfg = config.load(None, run_overrides(entry, budget, seed))
    run = setup(cfg, mesh=False)
    model, state, step = run.model, run.init_state(seed), run.jit_step()
    t0, losses = time.perf_counter(), []
    for s in range(budget.steps):
        state, m = step(state, {k: jnp.asarray(v) for k, v in run.batch(s).items()})
        if s % max(1, budget.steps // 10) == 0 or s == budget.steps - 1:
            losses.append((s, float(m["loss"])))
    train_s = time.perf_counter() - t0
    params = {"params": state["params"]}
    apply = jax.jit(lambda t: jnp.argmax(model.apply(params, t, train=False, step=budget.steps)[0], axis=-1))
    cells: dict[str, dict[str, float]] = {}
    for length, pairs in budget.cells:
        tot = {"hits": 0.0, "total": 0.0, "first_hits": 0.0, "first_total": 0.0}
        guess = 0.0
        for i in range(budget.eval_batches):
            b = mqar_batch(10_000 + seed, i, budget.batch, length, pairs, pairs, cfg.data.n_keys, cfg.data.n_values)
            got = score(np.asarray(apply(jnp.asarray(b["inputs"]))), b)
            tot = {k: tot[k] + got[k] for k in tot}
            guess += guess_present_accuracy(b["inputs"], b["mask"]) * got["total"]
        cap = max(1, (length - 2) // 4)
        mcfg = config.load(None, run_overrides(entry, budget, seed, length)).model
        cells[f"T{length}_p{pairs}"] = {
            "T": length,
            "pairs": min(pairs, cap),
            "accuracy": tot["hits"] / max(tot["total"], 1.0),
            "first_accuracy": tot["first_hits"] / max(tot["first_total"], 1.0),
            "guess_present": guess / max(tot["total"], 1.0),
            "queries": tot["total"],
            "first_queries": tot["first_total"],
            "state_bytes": state_bytes(mcfg),
        }
    n_params = int(sum(x.size for x in jax.tree_util.tree_leaves(state["params"])))
    log(
        f"  {entry.name} s{seed}: {train_s:.0f} s, loss {losses[0][1]:.3f} -> {losses[-1][1]:.3f}, "
        + ", ".join(f"{k} {v['accuracy']:.3f}/{v['first_accuracy']:.3f}" for k, v in cells.items())
    )
    git = git_state()
    return {
        "cells": cells,
        "params": n_params,
        "train_seconds": train_s,
        "loss": losses,
        "commit": git["commit"],
        "dirty": git["dirty"],
    }


def build_recall_report(
    budget: RecallBudget,
    seeds: int | None = None,
    name: str | None = None,
    out_dir: str | Path = "reports",
    runs_dir: str | Path = "runs",
    only: set[str] | None = None,
    command: str | None = None,
    log=print,
) -> dict[str, Any]:
    """Train/reuse every (entry, seed) of ``budget``; write ``reports/<name>/report.{md,json}`` and the figure."""
    from spiraljax.report import _compilation_cache, render_recall
    from spiraljax.runinfo import run_info

    name = name or budget.name
    _compilation_cache(Path(runs_dir) / ".jax_cache")
    root, out = Path(runs_dir) / f"report_{name}", Path(out_dir) / name
    root.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    seed_list = list(range(seeds or budget.seeds))
    picked = [e for e in RECALL_LINEUP if only is None or e.name in only]
    log(f"report {name!r}: budget {budget.name}, seeds {seed_list}, runs in {root}")
    report: dict[str, Any] = {
        "command": command or "python -m spiraljax.report " + shlex.join(sys.argv[1:]),
        "budget": asdict(budget),
        "seeds": seed_list,
        "provenance": run_info(),
        "report_md": str(out / "report.md"),
        "entries": {e.name: e.what for e in picked},
    }
    key = asdict(budget)
    report["runs"] = {e.name: {} for e in picked}
    for seed in seed_list:  # seed-major: an interrupted report has every model at its first seeds
        for entry in picked:
            path = root / f"{entry.name}_s{seed}.json"
            want = json.loads(json.dumps({"budget": key, "overrides": run_overrides(entry, budget, seed)}))
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
                result = saved["value"] if saved.get("key") == want else None
            except (OSError, json.JSONDecodeError, KeyError):
                result = None
            if result is None:
                result = train_and_score(entry, budget, seed, log)
                path.write_text(json.dumps({"key": want, "value": result}, default=float), encoding="utf-8")
            report["runs"][entry.name][seed] = result
    figs = render_recall.figures(report, out)
    (out / "report.md").write_text(render_recall.markdown(report, figs), encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float), encoding="utf-8")
    log(f"wrote {out / 'report.md'}, {out / 'report.json'} and {', '.join(figs.values())}")
    return report
