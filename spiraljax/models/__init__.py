"""Model families. Each family module defines a config class (a :class:`spiraljax.config.ModelConfig`
subclass that registers itself under its ``family``) whose ``build()`` returns the Flax module;
importing this package imports every family, which is how a config finds its class. The holographic
memory's config (``spiraljax.holographic``: not a Flax model, its ``build()`` refuses) registers here too."""
from __future__ import annotations

import flax.linen as nn

from spiraljax import holographic  # noqa: F401  (registers model.family holographic)
from spiraljax.config import ModelConfig
from spiraljax.models import hebbian, kssm, spiralformer, transformer  # noqa: F401  (registers them)


def build(cfg: ModelConfig) -> nn.Module:
    """The Flax module for ``cfg`` (``cfg.build()``).

    Every autoregressive model is called as
    ``logits, aux = model.apply(variables, tokens, *, train=False, step=0, **extras)``
    with ``logits [B, T, V]`` and ``aux`` a dict of named internals. Optional aux keys the
    trainer understands: ``aux_loss`` (scalar added to the loss), ``token_weights``
    ([B, T] multiplying the loss mask) and ``metrics`` (dict of scalars to log).
    """
    return cfg.build()


__all__ = ["build"]
