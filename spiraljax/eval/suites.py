"""Registry of evaluation suites run by ``python evaluate.py RUN --suite NAME``.

A suite is ``fn(ctx: EvalContext) -> SuiteResult``. ``ctx.model``/``ctx.variables``
are loaded lazily from the run directory, so suites that need no checkpoint
(``needs_run=False``, e.g. holographic) also work without one.

Each suite declares in its registration which runs it fits (``families``, ``sources`` and an
optional ``fits(ctx, options) -> bool`` described by ``requires``) and the ``--opt`` keys it reads
with their types and defaults (``options={"tokens": int, "values": Option(list[float], [0.1, 0.9]),
"items": Option(int, 2000, minimum=1)}``; a bare type has the default None: the suite derives the
value from the run). The options are parsed once, here: the suite function is called as
``fn(ctx, **options)`` with every declared key, typed. ``evaluate.py`` refuses, in one line, a suite
that does not fit the run, an option no selected suite declares and a value that does not parse or
is below its minimum; ``--suite all`` skips the suites that do not fit. ``--config`` (a config
without a run directory) is for suites with ``needs_run=False``.
"""

from __future__ import annotations

import copy
import importlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from spiraljax.errors import CheckpointError, SuiteError

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
    data: dict[str, Any]  # JSON-serialisable numbers (printed with --json)
    text: str  # human-readable table
    passed: bool | None = None  # for suites with pass/fail criteria


_TYPE_WORDS = {str: "text", int: "a whole number", float: "a number", bool: "true or false"}


def type_words(kind: Any) -> str:
    """How an option type reads in an error message: ``list[int]`` → 'comma-separated whole numbers'."""
    if typing.get_origin(kind) is list:
        inner = _TYPE_WORDS[typing.get_args(kind)[0]]
        return "comma-separated " + (inner[2:] + "s" if inner.startswith("a ") else inner)
    return _TYPE_WORDS[kind]


def parse_option(kind: Any, value: Any) -> Any:
    """Parse an ``--opt`` value as ``kind`` (str, int, float, bool or list[...] of those); a list kind
    takes comma-separated text or an already split list."""
    if typing.get_origin(kind) is list:
        inner = typing.get_args(kind)[0]
        items = value if isinstance(value, (list, tuple)) else str(value).split(",")
        return [parse_option(inner, str(v).strip()) for v in items if str(v).strip()]
    if kind is bool:
        low = str(value).strip().lower()
        if low not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(value)
        return low in ("true", "1", "yes")
    return kind(str(value))


@dataclass(frozen=True)
class Option:
    """One ``--opt`` key of a suite: its type (str, int, float, bool or list[...] of those), its value
    when not given (None: the suite derives it from the run) and, for numbers, the smallest value allowed."""

    kind: Any
    default: Any = None
    minimum: float | None = None


@dataclass
class Suite:
    name: str
    body: Callable[..., SuiteResult]  # body(ctx, **options)
    needs_run: bool = True
    families: tuple[str, ...] | None = None  # model families it fits; None = any family
    sources: tuple[str, ...] | None = None  # data sources the run must have been trained on; None = any
    options: dict[str, Option] = field(default_factory=dict)  # --opt key → Option
    fits: Callable[["EvalContext", dict[str, Any]], bool] | None = None  # a further check (ctx, options)...
    requires: str = ""  # ...and what it requires, in words

    def fn(self, ctx: "EvalContext") -> SuiteResult:
        """Run the suite on ``ctx`` with its options parsed (:meth:`values`)."""
        return self.body(ctx, **self.values(ctx))

    def values(self, ctx: "EvalContext") -> dict[str, Any]:
        """Every declared option, parsed from ``ctx.options`` or its default (SuiteError when bad)."""
        out = {}
        for key, option in self.options.items():
            raw = ctx.options.get(key)
            out[key] = copy.copy(option.default) if raw is None else self.parse(key, raw)
        return out

    def parse(self, key: str, value: Any) -> Any:
        """``value`` as the declared type of ``key``; SuiteError when it does not parse or is below the minimum."""
        option = self.options[key]
        try:
            parsed = parse_option(option.kind, value)
        except (ValueError, TypeError):
            raise SuiteError(f"--opt {key}={value!r}: suite {self.name!r} expects {type_words(option.kind)}") from None
        numbers = parsed if isinstance(parsed, list) else [parsed]
        if option.minimum is not None and any(v < option.minimum for v in numbers):
            raise SuiteError(f"--opt {key}={value!r}: suite {self.name!r} needs values ≥ {option.minimum:g}")
        return parsed

    def unfit(self, ctx: "EvalContext") -> str | None:
        """Why this suite does not fit ``ctx``'s run or config, in a few words (None when it fits)."""
        cfg = ctx.cfg
        this = "this run" if ctx.run_dir is not None else "this config"
        if self.families and cfg.model.family not in self.families:
            return f"it needs model.family {' or '.join(self.families)}; {this}: {cfg.model.family}"
        if self.sources and cfg.data.source not in self.sources:
            return f"it needs a model trained on data.source {' or '.join(self.sources)}; {this}: {cfg.data.source}"
        if self.fits is not None and not self.fits(ctx, self.values(ctx)):
            return f"it needs {self.requires or 'a different model'}; {this}: {cfg.model.family} on {cfg.data.source}"
        return None


SUITES: dict[str, Suite] = {}


def register_suite(
    name: str,
    *,
    needs_run: bool = True,
    families: tuple[str, ...] | None = None,
    sources: tuple[str, ...] | None = None,
    options: dict[str, Any] | None = None,
    fits: Callable[["EvalContext", dict[str, Any]], bool] | None = None,
    requires: str = "",
):
    """Register ``fn(ctx, **options) -> SuiteResult`` under ``name`` with what it fits and the options it
    reads (key → :class:`Option`, or a bare type for ``Option(type)``)."""
    declared = {k: v if isinstance(v, Option) else Option(v) for k, v in (options or {}).items()}

    def wrap(fn):
        SUITES[name] = Suite(name, fn, needs_run, families, sources, declared, fits, requires)
        return fn

    return wrap


def check_options(suites: list[Suite], options: dict[str, str]) -> None:
    """Refuse an option that none of ``suites`` declares (listing each suite's options), a value
    that does not parse or is below its minimum, and ``config`` (``--config``) when every suite needs a run."""
    for key, value in options.items():
        if key == "config":
            if all(s.needs_run for s in suites):
                raise SuiteError("--config is only used by suites that need no run directory (e.g. holographic)")
            continue
        takers = [s for s in suites if key in s.options]
        if not takers:
            listing = "; ".join(f"{s.name}: {', '.join(sorted(s.options)) or 'none'}" for s in suites)
            raise SuiteError(f"unknown option {key!r} (options of {listing})")
        for s in takers:
            s.parse(key, value)


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
    options: dict[str, Any] = field(default_factory=dict)  # --opt key=value pairs (text; Suite.values parses)
    _cache: dict[str, Any] = field(default_factory=dict)

    def _load(self) -> None:
        if "variables" not in self._cache:
            from spiraljax.runs import load_run

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
