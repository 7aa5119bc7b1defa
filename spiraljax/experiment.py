"""A whole experiment: the training loop plus the standard hooks (text samples, plots).

``train.py`` and the report call :func:`run`; :mod:`spiraljax.train` stays the loop alone and never
imports :mod:`spiraljax.eval` (the hooks are where the two meet).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax

from spiraljax.config import Config
from spiraljax.eval.generation import sample_text, text_sampler
from spiraljax.eval.plots import plot_run
from spiraljax.eval.tone import progress_fields
from spiraljax.train.loop import RunResult, TrainHooks, train

__all__ = ["run", "standard_hooks"]


def standard_hooks(cfg: Config, model: Any, dataset: Any) -> TrainHooks:
    """Samples of ``eval.sample_tokens`` tokens at each validation (key ``train.seed + step``), the
    run's metric plots at the end and the families' progress-bar fields (a K-SSM's tone zone)."""

    sampler = text_sampler(model, cfg)  # one sampler per run: its step compiles once

    def sample(params: Any, step: int) -> str:
        key = jax.random.key(cfg.train.seed + step)
        return sample_text(model, {"params": params}, dataset, cfg, key, step, sampler=sampler)

    return TrainHooks(sample=sample if cfg.eval.sample_tokens else None, plot=plot_run, progress=progress_fields)


def run(cfg: Config, workdir: str | Path, resume: bool = False, stop_at: int | None = None) -> RunResult:
    """:func:`spiraljax.train.loop.train` with :func:`standard_hooks` (same arguments and result)."""
    return train(cfg, workdir, resume=resume, stop_at=stop_at, hooks=standard_hooks)
