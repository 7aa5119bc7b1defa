"""One registry from ``model.family`` to a builder ``cfg -> flax.linen.Module``."""
from __future__ import annotations

import importlib
from typing import Callable

import flax.linen as nn

from spiraljax.config import MODEL_MODULES, ConfigError, ModelConfig

BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {}


def register(family: str):
    """Decorator for a builder function: ``@register("transformer") def build(cfg): ...``."""

    def wrap(fn: Callable[[ModelConfig], nn.Module]) -> Callable[[ModelConfig], nn.Module]:
        BUILDERS[family] = fn
        return fn

    return wrap


def build(cfg: ModelConfig) -> nn.Module:
    """Build the Flax module for ``cfg.family``.

    Every autoregressive model is called as
    ``logits, aux = model.apply(variables, tokens, *, train=False, step=0, **extras)``
    with ``logits [B, T, V]`` and ``aux`` a dict of named internals. Optional aux keys the
    trainer understands: ``aux_loss`` (scalar added to the loss), ``token_weights``
    ([B, T] multiplying the loss mask) and ``metrics`` (dict of scalars to log).
    """
    family = cfg.family
    if family not in BUILDERS and family in MODEL_MODULES:
        importlib.import_module(MODEL_MODULES[family])
    if family not in BUILDERS:
        raise ConfigError(f"model.family: no builder registered for {family!r}")
    return BUILDERS[family](cfg)
