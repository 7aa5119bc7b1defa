"""Registry of evaluation suites run by ``python evaluate.py RUN --suite NAME``.

A suite is ``fn(ctx: EvalContext) -> SuiteResult``. ``ctx.model``/``ctx.variables``
are loaded lazily from the run directory, so suites that need no checkpoint
(``needs_run=False``, e.g. holographic) also work without one.

Each suite declares in its registration which runs it fits (``families``, ``sources`` and an
optional ``fits(ctx) -> bool`` described by ``requires``) and the ``--opt`` keys it reads with their
types (``options={"tokens": int, "values": list[float]}``). ``evaluate.py`` refuses, in one line,
a suite that does not fit the run, an option no selected suite declares and a value that does not
parse; ``--suite all`` skips the suites that do not fit.
"""
from __future__ import annotations

import importlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from spiraljax.errors import SuiteError

SUITE_MODULES: dict[str, str] = {
    "lm": "spiraljax.eval.lm",
    "generate": "spiraljax.eval.generation",
    "causality": "spiraljax.eval.causality",
    "probe": "spiraljax.eval.probe",
    "recall": "spiraljax.eval.recall",
    "holographic": "spiraljax.eval.holographic",
    "long_context": "spiraljax.eval.long_context",
}


@dataclass
class SuiteResult:
    data: dict[str, Any]          # JSON-serialisable numbers (printed with --json)
    text: str                     # human-readable table
    passed: bool | None = None    # for suites with pass/fail criteria


_TYPE_WORDS = {str: "text", int: "a whole number", float: "a number", bool: "true or false"}


def type_words(kind: Any) -> str:
    """How an option type reads in an error message: ``list[int]`` → 'comma-separated whole numbers'."""
    if typing.get_origin(kind) is list:
        inner = _TYPE_WORDS[typing.get_args(kind)[0]]
        return "comma-separated " + (inner[2:] + "s" if inner.startswith("a ") else inner)
    return _TYPE_WORDS[kind]


def parse_option(kind: Any, value: str) -> Any:
    """Parse an ``--opt`` value as ``kind`` (str, int, float, bool or list[...] of those)."""
    if typing.get_origin(kind) is list:
        inner = typing.get_args(kind)[0]
        return [parse_option(inner, v.strip()) for v in str(value).split(",") if v.strip()]
    if kind is bool:
        low = str(value).strip().lower()
        if low not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(value)
        return low in ("true", "1", "yes")
    return kind(value)


@dataclass
class Suite:
    name: str
    fn: Callable[["EvalContext"], SuiteResult]
    needs_run: bool = True
    families: tuple[str, ...] | None = None  # model families it fits; None = any family
    sources: tuple[str, ...] | None = None   # data sources the run must have been trained on; None = any
    options: dict[str, Any] | None = None     # --opt key → type; None = not declared (not checked)
    fits: Callable[["EvalContext"], bool] | None = None   # a further applicability check...
    requires: str = ""                                      # ...and what it requires, in words

    def unfit(self, ctx: "EvalContext") -> str | None:
        """Why this suite does not fit ``ctx``'s run or config, in a few words (None when it fits)."""
        cfg = ctx.cfg
        this = "this run" if ctx.run_dir is not None else "this config"
        if self.families and cfg.model.family not in self.families:
            return f"it needs model.family {' or '.join(self.families)}; {this}: {cfg.model.family}"
        if self.sources and cfg.data.source not in self.sources:
            return f"it needs a model trained on data.source {' or '.join(self.sources)}; {this}: {cfg.data.source}"
        if self.fits is not None and not self.fits(ctx):
            return f"it needs {self.requires or 'a different model'}; {this}: {cfg.model.family} on {cfg.data.source}"
        return None

    def check_option(self, key: str, value: str) -> None:
        """Raise SuiteError when ``value`` does not parse as the declared type of ``key``."""
        kind = (self.options or {}).get(key)
        if kind is None:
            return
        try:
            parse_option(kind, value)
        except (ValueError, TypeError):
            raise SuiteError(f"--opt {key}={value!r}: suite {self.name!r} expects {type_words(kind)}") from None


SUITES: dict[str, Suite] = {}


def register_suite(name: str, *, needs_run: bool = True, families: tuple[str, ...] | None = None,
                   sources: tuple[str, ...] | None = None, options: dict[str, Any] | None = None,
                   fits: Callable[["EvalContext"], bool] | None = None, requires: str = ""):
    """Register ``fn(ctx) -> SuiteResult`` under ``name`` with what it fits and the options it reads."""
    def wrap(fn):
        SUITES[name] = Suite(name, fn, needs_run, families, sources, options, fits, requires)
        return fn

    return wrap


def check_options(suites: list[Suite], options: dict[str, str]) -> None:
    """Refuse an option that none of ``suites`` declares (listing each suite's options) and a
    value that does not parse. Suites that declare no options at all are not checked."""
    declared_by_all = all(s.options is not None for s in suites)
    for key, value in options.items():
        takers = [s for s in suites if s.options is not None and key in s.options]
        if not takers and declared_by_all:
            if key == "config":
                raise SuiteError("--config is only used by suites that need no run directory (e.g. holographic)")
            listing = "; ".join(f"{s.name}: {', '.join(sorted(s.options)) or 'none'}" for s in suites)
            raise SuiteError(f"unknown option {key!r} (options of {listing})")
        for s in takers:
            s.check_option(key, value)


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
        """The run's config.yaml (the checkpoint is not loaded), or ``--config`` without a run."""
        if "cfg" not in self._cache:
            from spiraljax import config

            if self.run_dir is None:
                self._cache["cfg"] = config.load(self.options.get("config"))
            else:
                if not (self.run_dir / "config.yaml").is_file():
                    from spiraljax.train.checkpoint import CheckpointError

                    raise CheckpointError(f"{self.run_dir}: not a run directory (no config.yaml)")
                self._cache["cfg"] = config.load(self.run_dir / "config.yaml")
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
