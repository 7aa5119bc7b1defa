"""spiraljax: causal, reproducible, vectorised sequence-model research in JAX/Flax.

Importing the package has no side effects; submodules load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.1"
_LAZY = {"config", "models", "holographic", "ops", "nn", "data", "train", "eval"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"spiraljax.{name}")
    if name == "load_run":
        from spiraljax.runs import load_run

        return load_run
    raise AttributeError(f"module 'spiraljax' has no attribute {name!r}")
