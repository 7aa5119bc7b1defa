"""Train (or reuse) one run of the report and read its numbers back from the run directory.

A run directory is reused as it is when its ``report_status.json`` says it finished with the same
resolved config; an unfinished one is resumed from its checkpoints (exact resume), so an
interrupted report continues where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from spiraljax import config as config_lib
from spiraljax.config import Config, ConfigError
from spiraljax.runinfo import describe, read_run_info
from spiraljax.runs import read_metrics

STATUS = "report_status.json"
STANDARD_KEYS = {"step", "kind", "loss", "ce", "lr", "grad_norm", "tokens_per_s", "skipped"}


def resolve(config_path: str, overrides: list[str]) -> Config:
    return config_lib.load(config_lib.resolve_path(config_path), overrides)


def read_status(run: Path) -> dict[str, Any]:
    try:
        return json.loads((run / STATUS).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _write_status(run: Path, status: dict[str, Any]) -> None:
    tmp = run / (STATUS + ".tmp")
    tmp.write_text(json.dumps(status, indent=2), encoding="utf-8")
    tmp.replace(run / STATUS)


def ensure_trained(cfg: Config, run: Path, log=print) -> dict[str, Any]:
    """Train ``cfg`` in ``run`` unless a finished run of the same config is already there."""
    from spiraljax.experiment import run as run_experiment

    wanted = cfg.to_dict()
    status = read_status(run)
    if status.get("finished") and status.get("config") == wanted:
        log(f"  reuse   {run} (finished, {status['seconds']:.0f} s)")
        return status
    has_ckpt = (run / "checkpoints").is_dir() and any((run / "checkpoints").rglob("*"))
    if has_ckpt and status.get("config") not in (None, wanted):
        raise ConfigError(f"{run}: holds a run of a different config; delete it or pick another --name")
    log(f"  {'resume ' if has_ckpt else 'train  '} {run}")
    run.mkdir(parents=True, exist_ok=True)
    _write_status(run, {"finished": False, "config": wanted, "seconds": status.get("seconds", 0.0)})
    t0 = time.time()
    result = run_experiment(cfg, run, resume=has_ckpt)
    seconds = status.get("seconds", 0.0) + (time.time() - t0)
    status = {"finished": not result.interrupted, "config": wanted, "seconds": seconds}
    _write_status(run, status)
    if result.interrupted:
        raise KeyboardInterrupt(f"{run} interrupted at step {result.step}; re-run the report to continue")
    return status


def curve(rows: list[dict], key: str = "bpc") -> list[tuple[int, float]]:
    """``(step, value)`` of every evaluation row (the validation curve)."""
    return [(int(r["step"]), float(r[key])) for r in rows if r.get("kind") == "eval" and key in r]


def diagnostics(rows: list[dict], tail: float = 0.1) -> dict[str, Any]:
    """The model's own metrics (aux["metrics"]) averaged over the last ``tail`` of logged steps,
    and the summed tone-zone visits where a K-SSM logged them."""
    train = [r for r in rows if r.get("kind") == "train"]
    if not train:
        return {}
    last = train[-max(int(len(train) * tail), 1) :]
    out: dict[str, Any] = {}
    for key in sorted({k for r in last for k in r} - STANDARD_KEYS):
        vals = [r[key] for r in last if isinstance(r.get(key), (int, float))]
        if vals:
            out[key] = float(np.mean(vals))
    zones = [r["zone_counts"] for r in train if isinstance(r.get("zone_counts"), list)]
    if zones:
        out["zone_counts"] = np.sum(zones, axis=0).astype(int).tolist()
    return out


def train_throughput(rows: list[dict]) -> float | None:
    """Median logged tokens/s, leaving out the first logged interval (it contains the compile)."""
    vals = [r["tokens_per_s"] for r in rows if r.get("kind") == "train" and "tokens_per_s" in r][1:]
    return float(np.median(vals)) if vals else None


def step_memory_mb(cfg: Config) -> float | None:
    """Peak memory of one compiled train step (arguments + outputs + XLA scratch − donated aliases), MiB.

    Read from XLA's compiled memory analysis, so it is exact and does not depend on machine load.
    """
    from spiraljax.train.setup import setup

    s = setup(cfg, mesh=False)  # the step as the loop runs it (carried state, gradient accumulation)
    try:
        compiled = s.jit_step().lower(s.abstract_state, s.batch(0)).compile()
        m = compiled.memory_analysis()
    except Exception:  # a backend without memory analysis: report nothing
        return None
    if m is None:
        return None
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    return total / 2**20


def run_numbers(run: Path, status: dict[str, Any]) -> dict[str, Any]:
    """Everything the report shows about one finished run."""
    rows = read_metrics(run / "metrics.jsonl")
    params = next((r["params"] for r in rows if r.get("kind") == "info" and "params" in r), None)
    bpc, loss = curve(rows, "bpc"), curve(rows, "loss")
    r_curve = [(int(r["step"]), float(r["R_mean"])) for r in rows if r.get("kind") == "train" and "R_mean" in r]
    info = read_run_info(run) or {}
    return {
        **({"R_curve": r_curve} if r_curve else {}),
        "provenance": describe(info),
        "commit": (info.get("git") or {}).get("commit"),
        "dirty": (info.get("git") or {}).get("dirty"),
        "run_dir": str(run),
        "params": params,
        "bpc_curve": bpc,
        "loss_curve": loss,
        "final_bpc": bpc[-1][1] if bpc else None,
        "final_loss": loss[-1][1] if loss else None,
        "tokens_per_s": train_throughput(rows),
        "wall_s": status.get("seconds"),
        "diagnostics": diagnostics(rows),
    }
