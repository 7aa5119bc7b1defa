"""The training loop: data → jit step on a device mesh → metrics, validation, checkpoints.

What else happens at an evaluation or at the end (text samples, plots) is a hook
(:class:`TrainHooks`); :func:`spiraljax.experiment.run` passes the standard ones. This package never
imports :mod:`spiraljax.eval`.

Every run directory gets ``run.json`` (commit, versions, platform, command line; see
:mod:`spiraljax.runinfo`). Resumable exactly: the batch of step s is a pure function of (seed, s), the step's RNG is
``fold_in(rng, s)``, and params/optimizer state/step/rng are restored from Orbax.

Nothing is written before it is known to be valid: the config, data, sample prompt and the model's
parameter shapes are checked before the run directory is created, and a resume is checked against
the saved config and the checkpoint's parameter tree (metadata only) before anything in the run
changes. Only the keys in :data:`RESUMABLE_KEYS` may change on resume; the changes are recorded.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import numpy as np

from spiraljax import config as config_lib
from spiraljax.config import Config
from spiraljax.data.base import metric_unit
from spiraljax.errors import RunError
from spiraljax.losses import evaluate_lm, make_eval_step
from spiraljax.runinfo import write_run_info
from spiraljax.train.checkpoint import Checkpointer
from spiraljax.train.distributed import is_primary
from spiraljax.train.lock import RunLock
from spiraljax.train.metrics import MetricsWriter, NullWriter
from spiraljax.train.optim import lr_schedule
from spiraljax.train.progress import progress_bar
from spiraljax.train.setup import Setup, setup
from spiraljax.train.sharding import shard_batch


@dataclass
class TrainHooks:
    """Callbacks of the loop; each may be None (skipped). A failing hook warns, never stops training.

    ``sample(params, step) -> text``: called after each validation pass, saved to
    ``samples/step_<step>.txt``. ``plot(run_dir)``: called once when the run reaches ``train.steps``.
    ``evaluate(params, step) -> {"loss", "bpc", "ppl", …}`` replaces the built-in validation pass
    (:func:`spiraljax.losses.evaluate_lm`), whose ``loss`` picks the best checkpoint.
    ``progress(metrics) -> {name: text}``: a model family's own progress-bar fields of a logged step
    (e.g. a K-SSM's tone zone), shown after loss and tok/s.
    """

    sample: Callable[[Any, int], str] | None = None
    plot: Callable[[Path], None] | None = None
    evaluate: Callable[[Any, int], dict[str, float]] | None = None
    progress: Callable[[dict[str, Any]], dict[str, str]] | None = None


HookFactory = Callable[[Config, Any, Any], TrainHooks]  # (cfg, model, dataset) -> hooks


@dataclass
class RunResult:
    run_dir: Path
    step: int
    interrupted: bool
    val: dict[str, float] | None
    seconds: float
    unit: str = "BPC"  # what val["bpc"] measures: "BPC" (bits per byte of text) or "bits/glyph"


# Config keys that may change when a run resumes (recorded in metrics.jsonl and config.yaml): the
# run's length, learning-rate schedule and optimizer hyperparameters (the optimizer state keeps its
# layout), logging/eval/checkpoint cadence, evaluation settings and the device mesh. Any other
# change (model.*, data.*, train.seed, batch_size, grad_accum, trainable) is refused.
RESUMABLE_KEYS = (
    "name",
    "train.steps",
    "train.lr",
    "train.min_lr_ratio",
    "train.warmup_steps",
    "train.weight_decay",
    "train.clip_norm",
    "train.b1",
    "train.b2",
    "train.eval_every",
    "train.log_every",
    "train.progress",
    "train.tensorboard",
    "checkpoint.",
    "eval.",
    "mesh.",
)


def resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_KEYS)


def flat_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.d_model": 128, ...}`` of a nested config dict (lists stay whole values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flat_config(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose value differs between two config dicts: ``{key: (old, new)}``."""
    a, b = flat_config(old), flat_config(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _describe(changes: dict[str, tuple[Any, Any]], keys: Iterable[str], limit: int = 6) -> str:
    keys = list(keys)
    shown = [f"{k} {changes[k][0]!r} → {changes[k][1]!r}" for k in keys[:limit]]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(shown) + more


def holds_run(run: Path) -> bool:
    """A directory :func:`train` has started in: it has a config.yaml or a checkpoints/ folder."""
    return (run / "config.yaml").is_file() or (run / "checkpoints").is_dir()


def reached_step(run: Path) -> int:
    """The newest step saved in ``run/checkpoints`` (legacy ``latest``/``best`` too), from the directory
    names alone (0 when none): the step a resume of ``run`` continues from, at most."""
    root = run / "checkpoints"
    dirs = [d for base in (root, root / "latest", root / "best") if base.is_dir() for d in base.iterdir()]
    return max((int(d.name) for d in dirs if d.name.isdigit() and d.is_dir()), default=0)


def resume_command(run: Path) -> str:
    """The command that continues ``run`` (its config.yaml is the config; nothing else is needed)."""
    return f"python train.py --workdir {shlex.quote(str(run))} --resume"


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the next step boundary and exits.

    Several processes: they must stop at the same step, or the checkpoint (written by all of them)
    is never complete. SIGTERM then stays with JAX's preemption notifier, which tells every process;
    SIGINT is passed on to it as SIGTERM; and the loop asks
    ``multihost_utils.reached_preemption_sync_point(step)`` at every step, which becomes true at the
    same step in every process (one past the furthest step any of them had reached).
    """

    def __init__(self, processes: int = 1) -> None:
        self.multi = processes > 1
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGINT,) if self.multi else (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker): no handlers
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        if self.multi:
            os.kill(os.getpid(), signal.SIGTERM)  # JAX's preemption notice reaches every process

    def stop_now(self, step: int) -> bool:
        """Whether to save and stop after ``step`` (called once per step, in every process)."""
        if self.multi:
            from jax.experimental import multihost_utils

            try:
                return multihost_utils.reached_preemption_sync_point(step)
            except RuntimeError:  # the preemption service is switched off: this process's signals only
                pass
        return self.signum is not None

    def describe(self) -> str:
        if self.multi:
            return "stopped by a signal to one of the run's processes"
        return f"received {signal.Signals(self.signum).name}"

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _postfix(
    out: dict[str, Any], tok_s: float, family_fields: Callable[[dict[str, Any]], dict[str, str]] | None = None
) -> dict[str, str]:
    """The progress bar's fields: loss, tok/s, the family's own fields (``TrainHooks.progress``), then
    the model's other scalar metrics (8 fields at most)."""
    shown = {"loss": f"{float(out['loss']):.3f}", "tok/s": f"{tok_s:,.0f}"}
    if family_fields is not None:
        shown.update(family_fields(out))
    for k, v in out.items():
        if k not in ("loss", "ce", "grad_norm", "skipped") and np.ndim(v) == 0 and len(shown) < 8:
            shown[k] = f"{float(v):.3g}"
    return shown


def train(
    cfg: Config, workdir: str | Path, resume: bool = False, stop_at: int | None = None, hooks: HookFactory | None = None
) -> RunResult:
    """Train ``cfg`` in ``workdir``.

    Args:
      cfg: the validated config.
      workdir: the run directory (created; must not hold checkpoints unless ``resume``).
      resume: continue the run in ``workdir`` from its newest readable checkpoint, after checking
        that ``cfg`` fits it (see :data:`RESUMABLE_KEYS`).
      stop_at: end early at this step (with a checkpoint), as an interruption would.
      hooks: ``hooks(cfg, model, dataset) -> TrainHooks``; None: validation only, no samples or plots
        (:func:`spiraljax.experiment.run` passes the standard hooks).

    Returns:
      A :class:`RunResult` (final step, whether it was interrupted, the last validation metrics).
    Raises:
      RunError, LockError, ConfigError, DataError, CheckpointError: one-line user errors.
    """
    run = Path(workdir)
    if resume and not run.is_dir():
        raise RunError(f"{run}: nothing to resume (no such directory; check --workdir)")
    if resume and not holds_run(run):
        raise RunError(f"{run}: nothing to resume (no config.yaml or checkpoints/ in it; check --workdir)")
    prepared = setup(cfg)  # everything checked before the run directory exists
    with RunLock(run) if is_primary() else contextlib.nullcontext():  # multi-process: process 0 owns the run
        ckpt = Checkpointer(run, cfg.checkpoint.keep, cfg.checkpoint.async_save)
        try:
            made = hooks(cfg, prepared.model, prepared.dataset) if hooks else TrainHooks()
            return _train(cfg, run, ckpt, resume, stop_at, prepared, made)
        finally:
            ckpt.close()


def _saved_config(path: Path) -> dict:
    """The run's config.yaml with today's defaults filled in (keys added since it was written are
    not changes); as raw YAML if it no longer validates."""
    try:
        return config_lib.load(path).to_dict()
    except config_lib.ConfigError:
        return config_lib.read_yaml(path)


def _check_resume(cfg: Config, run: Path, ckpt: Checkpointer, abstract_state: dict) -> dict[str, tuple[Any, Any]]:
    """Refuse (one line, nothing written) a resume whose config changes anything but
    :data:`RESUMABLE_KEYS` or whose parameter/optimizer tree differs from the checkpoint's.
    Returns the allowed changes."""
    saved = run / "config.yaml"
    if not ckpt.has_checkpoints():  # nothing trained yet: the resume starts from scratch with cfg
        return {}
    changes = config_changes(_saved_config(saved), cfg.to_dict()) if saved.is_file() else {}
    refused = [k for k in changes if not resumable(k)]
    reached = reached_step(run)
    if cfg.train.steps < reached:
        raise RunError(
            f"{run}: cannot resume with train.steps {cfg.train.steps}: the run has already reached step "
            f"{reached}. Nothing was changed: resume without lowering train.steps, or extend it with "
            f"--set train.steps=N (N > {reached})"
        )
    mismatch = ckpt.incompatibility(abstract_state)
    if mismatch:
        what = _describe(changes, refused or changes) if changes else "no config key (was the model code changed?)"
        raise RunError(
            f"{run}: cannot resume: the checkpoint does not fit the new config ({mismatch}); changed: "
            f"{what}. Nothing was changed: resume without these overrides or train into a new --workdir"
        )
    if refused:
        raise RunError(
            f"{run}: cannot resume with {_describe(changes, refused)}: on resume only the length, "
            "learning-rate schedule, optimizer hyperparameters, cadences, eval settings and mesh may "
            "change. Nothing was changed: train into a new --workdir instead"
        )
    return changes


def _warn(what: str, step: int | None, err: Exception) -> None:
    at = f" at step {step}" if step is not None else ""
    print(f"warning: {what} failed{at}: {type(err).__name__}: {err}", file=sys.stderr)


def _train(
    cfg: Config, run: Path, ckpt: Checkpointer, resume: bool, stop_at: int | None, prepared: Setup, hooks: TrainHooks
) -> RunResult:
    t_start = time.time()
    if ckpt.has_checkpoints() and not resume:
        raise RunError(f"{run} already holds checkpoints; pass --resume to continue it or choose another --workdir")
    changes = _check_resume(cfg, run, ckpt, prepared.abstract_state) if resume else {}
    tc = cfg.train
    dataset, model, mesh = prepared.dataset, prepared.model, prepared.mesh
    schedule = lr_schedule(tc)
    unit = metric_unit(dataset)
    state = prepared.init_state()  # sharded by FSDP / tensor-parallel specs per leaf
    start, restored = 0, False
    train_seconds = 0.0  # wall seconds of training steps (validation excluded), carried by checkpoints
    if resume and ckpt.has_checkpoints():
        state = ckpt.restore(state)
        start, restored = int(state["step"]), True
        train_seconds = float(ckpt.restored_meta.get("train_seconds", 0.0))
        said = f"; changed: {_describe(changes, changes, limit=len(changes))}" if changes else ""
        print(f"resumed {run} at step {start}{said}")
    elif resume:
        print(f"note: {run} has no checkpoint yet; starting from scratch")
    data_sha = getattr(dataset, "sha256", None)
    if data_sha is not None:  # a corpus that names its content: a different install shows here
        print(dataset.describe() if hasattr(dataset, "describe") else f"data sha256 {data_sha}")
    primary = is_primary()  # multi-process: every process computes, process 0 writes the run's files
    if primary:
        config_lib.save(cfg, run / "config.yaml")
        write_run_info(run, resumed=restored)
        (run / "samples").mkdir(exist_ok=True)
    writer = (
        MetricsWriter(run, resume_step=start if restored else None, tensorboard=tc.tensorboard)
        if primary
        else NullWriter()
    )
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    sha = {} if data_sha is None else {"data_sha256": data_sha}
    if start == 0:
        writer.write(0, "info", {"params": n_params, "devices": jax.device_count(), "family": cfg.model.family, **sha})
    if restored:
        writer.write(
            start,
            "info",
            {"resumed_at": start, **sha, "changed": {k: {"from": a, "to": b} for k, (a, b) in changes.items()}},
        )
    lead = prepared.lead
    train_step = prepared.jit_step()
    eval_step = jax.jit(make_eval_step(model, dataset.token_bytes, tc.carry_state))
    tokens_per_step = tc.batch_size * tc.grad_accum * cfg.model.seq_len
    end = tc.steps if stop_at is None else min(stop_at, tc.steps)
    val = None

    def run_eval(step: int) -> dict[str, float]:
        if hooks.evaluate is not None:
            m = hooks.evaluate(state["params"], step)
        else:
            m = evaluate_lm(model, state["params"], dataset, step, eval_step, tc.carry_state)
        writer.write(step, "eval", {**m, "unit": unit, "train_seconds": train_seconds})
        ckpt.save(state, val_loss=m["loss"], meta={"train_seconds": train_seconds})  # kept while best or newest
        if hooks.sample is not None:
            try:
                text = hooks.sample(state["params"], step)  # every process: the sampler's jits span all devices
                if primary:
                    (run / "samples" / f"step_{step:07d}.txt").write_text(text, encoding="utf-8")
            except Exception as err:  # a sample must never kill a training run
                _warn("sampling", step, err)
        return m

    bar = progress_bar(tc.steps, start, cfg.name, enabled=tc.progress and primary)  # plain lines unless a terminal
    interrupted = False
    t_last, steps_since = time.time(), 0
    t_mark: float | None = time.time()  # start of the current stretch of training steps

    def elapsed() -> float:
        """Wall seconds of training so far: the stretches between validation passes."""
        return train_seconds + (time.time() - t_mark if t_mark is not None else 0.0)

    with _StopFlag(jax.process_count()) as stop:
        step = start
        while step < end:
            batch = shard_batch(prepared.batch(step), mesh, lead)
            state, out = train_step(state, batch)
            step += 1
            steps_since += 1
            bar.update(1)
            if step % tc.log_every == 0 or step == end:
                out = jax.device_get(out)
                now = time.time()
                tok_s = steps_since * tokens_per_step / max(now - t_last, 1e-9)
                t_last, steps_since = now, 0
                writer.write(step, "train", {**out, "lr": float(schedule(step - 1)), "tokens_per_s": tok_s})
                bar.set_postfix(_postfix(out, tok_s, hooks.progress), refresh=False)
            if step % tc.eval_every == 0 or step == tc.steps:
                jax.block_until_ready(state)  # training time stops here: validation is not counted
                train_seconds, t_mark = elapsed(), None
                val = run_eval(step)
                t_mark = time.time()
                bar.write(f"step {step}: val loss {val['loss']:.4f}  {unit} {val['bpc']:.4f}  PPL {val['ppl']:.2f}")
            if step % cfg.checkpoint.every == 0 or step == end:
                ckpt.save(state, meta={"train_seconds": elapsed()})
            if stop.stop_now(step):
                ckpt.save(state, meta={"train_seconds": elapsed()})
                interrupted = True
                bar.write(f"{stop.describe()}: saved checkpoint at step {step}; resume with: {resume_command(run)}")
                break
    bar.close()
    ckpt.wait()
    writer.close()
    if step == tc.steps and hooks.plot is not None and primary:
        try:
            hooks.plot(run)
        except Exception as err:  # a plot must never fail a finished run
            _warn("plotting", None, err)
    return RunResult(run, step, interrupted or step < tc.steps, val, time.time() - t_start, unit)
