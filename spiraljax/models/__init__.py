"""Model families. Each family module defines a config class (a :class:`spiraljax.config.ModelConfig`
subclass that registers itself under its ``family``) whose ``build()`` returns the Flax module.

:data:`FAMILIES` is the one list of the in-tree families: loading a config imports this package
(``ModelConfig.PACKAGE``), which imports each family's module, and ``ModelConfig.registered()`` then holds
exactly these classes (plus any out-of-tree family a program imported itself; tests/test_config.py
checks the two agree). The holographic memory's config (``spiraljax.holographic``: not a Flax model,
its ``build()`` refuses) is listed too."""

from __future__ import annotations

import flax.linen as nn

from spiraljax import holographic
from spiraljax.config import ModelConfig
from spiraljax.models import hebbian, kssm, spiralformer, transformer

# model.family → config class, every family of the repository
FAMILIES: dict[str, type[ModelConfig]] = {
    "transformer": transformer.TransformerConfig,
    "spiralformer": spiralformer.SpiralformerConfig,
    "kssm_v1": kssm.KSSMv1Config,
    "kssm_v2": kssm.KSSMv2Config,
    "kssm_v3": kssm.KSSMv3Config,
    "hebbian_lm": hebbian.HebbianConfig,
    "holographic": holographic.HolographicConfig,
}


def build(cfg: ModelConfig) -> nn.Module:
    """The Flax module for ``cfg`` (``cfg.build()``).

    Every autoregressive model is called as
    ``logits, aux = model.apply(variables, tokens, *, train=False, step=0, **extras)``
    with ``logits [B, T, V]`` and ``aux`` a dict of named internals. Optional aux keys the
    trainer understands: ``aux_loss`` (scalar added to the loss), ``token_weights``
    ([B, T] multiplying the loss mask) and ``metrics`` (dict of scalars to log).
    """
    return cfg.build()


__all__ = ["FAMILIES", "build"]
