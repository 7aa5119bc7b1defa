"""Registry of evaluation suites run by ``python evaluate.py RUN --suite NAME``.

A suite is ``fn(ctx: EvalContext) -> SuiteResult``. ``ctx.model``/``ctx.variables``
are loaded lazily from the run directory, so suites that need no checkpoint
(``needs_run=False``, e.g. holographic) also work without one.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

SUITE_MODULES: dict[str, str] = {
    "lm": "spiraljax.eval.lm",
    "generate": "spiraljax.eval.generation",
    "causality": "spiraljax.eval.causality",
    "probe": "spiraljax.eval.probe",
    "recall": "spiraljax.eval.recall",
    "holographic": "spiraljax.eval.holographic",
}


@dataclass
class SuiteResult:
    data: dict[str, Any]          # JSON-serialisable numbers (printed with --json)
    text: str                     # human-readable table
    passed: bool | None = None    # for suites with pass/fail criteria


@dataclass
class Suite:
    name: str
    fn: Callable[["EvalContext"], SuiteResult]
    needs_run: bool = True
    families: tuple[str, ...] | None = None  # None = any family


SUITES: dict[str, Suite] = {}


def register_suite(name: str, *, needs_run: bool = True, families: tuple[str, ...] | None = None):
    def wrap(fn):
        SUITES[name] = Suite(name, fn, needs_run, families)
        return fn

    return wrap


def get_suite(name: str) -> Suite:
    if name not in SUITES and name in SUITE_MODULES:
        importlib.import_module(SUITE_MODULES[name])
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r} (choose from {', '.join(sorted(SUITE_MODULES))})")
    return SUITES[name]


@dataclass
class EvalContext:
    run_dir: Path | None
    checkpoint: str = "best"
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)   # --opt key=value pairs
    _cache: dict[str, Any] = field(default_factory=dict)

    def _load(self) -> None:
        if "variables" not in self._cache:
            from spiraljax.train.checkpoint import load_run

            cfg, variables, step = load_run(self.run_dir, self.checkpoint, return_step=True)
            self._cache.update(cfg=cfg, variables=variables, step=step)

    @property
    def cfg(self):
        if "cfg" not in self._cache:
            if self.run_dir is None:
                from spiraljax import config

                self._cache["cfg"] = config.load(self.options.get("config"))
            else:
                self._load()
        return self._cache["cfg"]

    @property
    def variables(self):
        self._load()
        return self._cache["variables"]

    @property
    def step(self) -> int:
        self._load()
        return self._cache["step"]

    @property
    def model(self):
        if "model" not in self._cache:
            from spiraljax.models import build

            self._cache["model"] = build(self.cfg.model)
        return self._cache["model"]

    @property
    def dataset(self):
        if "dataset" not in self._cache:
            from spiraljax.data.base import build_dataset

            self._cache["dataset"] = build_dataset(self.cfg)
        return self._cache["dataset"]
