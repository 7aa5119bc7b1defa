"""The training loop: data → jit step on a device mesh → metrics, eval, samples, checkpoints.

Resumable exactly: the batch of step s is a pure function of (seed, s), the step's RNG is
``fold_in(rng, s)``, and params/optimizer state/step/rng are restored from Orbax.
"""
from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from spiraljax import config as config_lib
from spiraljax.config import Config
from spiraljax.data.base import build_dataset
from spiraljax.eval.generation import sample_text
from spiraljax.eval.lm import evaluate_lm
from spiraljax.models import build
from spiraljax.train.checkpoint import Checkpointer
from spiraljax.train.lock import RunLock
from spiraljax.train.metrics import MetricsWriter
from spiraljax.train.optim import lr_schedule, make_optimizer
from spiraljax.train.sharding import make_mesh, replicated, shard_batch
from spiraljax.train.step import init_state, make_eval_step, make_train_step


class RunError(RuntimeError):
    """A one-line, user-facing problem with the run directory."""


@dataclass
class RunResult:
    run_dir: Path
    step: int
    interrupted: bool
    val: dict[str, float] | None
    seconds: float


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the next step boundary and exits."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker): no handlers
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def batch_for_step(dataset, step: int, grad_accum: int) -> dict[str, np.ndarray]:
    if grad_accum == 1:
        return dataset.train_batch(step)
    micro = [dataset.train_batch(step * grad_accum + i) for i in range(grad_accum)]
    return {k: np.stack([m[k] for m in micro]) for k in micro[0]}


def _postfix(out: dict[str, Any], tok_s: float) -> dict[str, str]:
    shown = {"loss": f"{float(out['loss']):.3f}", "tok/s": f"{tok_s:,.0f}"}
    if "R_mean" in out:  # K-SSM: the tone zone of the mean order parameter (SPEC §2.5)
        from spiraljax.eval.tone import zone_name

        shown["zone"] = zone_name(float(out["R_mean"]))
    for k, v in out.items():
        if k not in ("loss", "ce", "grad_norm", "skipped") and np.ndim(v) == 0 and len(shown) < 8:
            shown[k] = f"{float(v):.3g}"
    return shown


def train(cfg: Config, workdir: str | Path, resume: bool = False, stop_at: int | None = None) -> RunResult:
    """Train ``cfg`` in ``workdir``. ``stop_at`` ends early (with a checkpoint) as an interruption would."""
    run = Path(workdir)
    with RunLock(run):
        ckpt = Checkpointer(run, cfg.checkpoint.keep, cfg.checkpoint.async_save)
        try:
            return _train(cfg, run, ckpt, resume, stop_at)
        finally:
            ckpt.close()


def _train(cfg: Config, run: Path, ckpt: Checkpointer, resume: bool, stop_at: int | None) -> RunResult:
    t_start = time.time()
    if ckpt.has_checkpoints() and not resume:
        raise RunError(f"{run} already holds checkpoints; pass --resume to continue it or choose another --workdir")
    config_lib.save(cfg, run / "config.yaml")
    (run / "samples").mkdir(exist_ok=True)
    tc = cfg.train
    dataset = build_dataset(cfg)
    model = build(cfg.model)
    mesh = make_mesh(cfg.mesh, tc.batch_size)
    tx = make_optimizer(tc)
    schedule = lr_schedule(tc)
    sample_inputs = np.asarray(dataset.train_batch(0)["inputs"][:1])
    state = jax.jit(lambda x: init_state(model, tx, x, tc.seed), out_shardings=replicated(mesh))(sample_inputs)
    start = 0
    if resume and ckpt.has_checkpoints():
        state = ckpt.restore(state)
        start = int(state["step"])
        print(f"resumed {run} at step {start}")
    elif resume:
        print(f"note: {run} has no checkpoint yet; starting from scratch")
    writer = MetricsWriter(run, resume_step=start if resume else None, tensorboard=tc.tensorboard)
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    if start == 0:
        writer.write(0, "info", {"params": n_params, "devices": jax.device_count(), "family": cfg.model.family})
    train_step = jax.jit(make_train_step(model, tx, tc.grad_accum), donate_argnums=0)
    eval_step = jax.jit(make_eval_step(model, dataset.token_bytes))
    best = ckpt.best_val_loss()
    lead = 1 if tc.grad_accum > 1 else 0
    tokens_per_step = tc.batch_size * tc.grad_accum * cfg.model.seq_len
    end = tc.steps if stop_at is None else min(stop_at, tc.steps)
    val = None

    def run_eval(step: int) -> dict[str, float]:
        nonlocal best
        m = evaluate_lm(model, state["params"], dataset, step, eval_step)
        writer.write(step, "eval", m)
        if m["loss"] < best:
            best = m["loss"]
            ckpt.save_best(state, m["loss"])
        if cfg.eval.sample_tokens:
            try:
                text = sample_text(model, {"params": state["params"]}, dataset, cfg, jax.random.key(tc.seed + step), step)
                (run / "samples" / f"step_{step:07d}.txt").write_text(text, encoding="utf-8")
            except Exception as err:  # a sample must never kill a training run
                print(f"warning: sampling failed at step {step}: {type(err).__name__}: {err}", file=sys.stderr)
        return m

    bar = tqdm(total=tc.steps, initial=start, disable=not tc.progress, dynamic_ncols=True, mininterval=1.0,
               desc=cfg.name, file=sys.stderr)
    interrupted = False
    t_last, steps_since = time.time(), 0
    with _StopFlag() as stop:
        step = start
        while step < end:
            batch = shard_batch(batch_for_step(dataset, step, tc.grad_accum), mesh, lead)
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
                bar.set_postfix(_postfix(out, tok_s), refresh=False)
            if step % tc.eval_every == 0 or step == tc.steps:
                val = run_eval(step)
                bar.write(f"step {step}: val loss {val['loss']:.4f}  BPC {val['bpc']:.4f}  PPL {val['ppl']:.2f}")
            if step % cfg.checkpoint.every == 0 or step == end:
                ckpt.save(state)
            if stop.signum is not None:
                ckpt.save(state)
                interrupted = True
                bar.write(f"received {signal.Signals(stop.signum).name}: saved checkpoint at step {step}; "
                          f"resume with --resume")
                break
    bar.close()
    ckpt.wait()
    writer.close()
    if step == tc.steps:
        try:
            from spiraljax.eval.plots import plot_run

            plot_run(run)
        except Exception as err:
            print(f"warning: plotting failed: {type(err).__name__}: {err}", file=sys.stderr)
    return RunResult(run, step, interrupted or step < tc.steps, val, time.time() - t_start)
