"""The holographic memory's config: ``model.family: holographic`` (registered like every family, so a
config file with it loads; :meth:`HolographicConfig.build` refuses, there is no Flax model to train)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from spiraljax.config import ModelConfig
from spiraljax.errors import ConfigError


class HolographicConfig(ModelConfig):
    """Not a Flax model: :func:`init` / :func:`learn` / :func:`retrieve` over a state pytree, evaluated by
    ``python evaluate.py --suite holographic``."""

    family: Literal["holographic"] = "holographic"
    # what saved configs from before the per-family split carry (this family had its own defaults)
    RETIRED: ClassVar[dict[str, Any]] = {"d_model": 16, "n_layers": 1, "n_heads": 1, "dropout": 0.0, "dtype": "float32"}
    vocab_size: int = Field(256, gt=1, description="number of token ids (each gets a Cl(3,1) embedding)")
    seq_len: int = Field(
        64, gt=1, description="window length of the data pipeline (the memory reads context_len tokens)"
    )
    context_len: int = Field(3, ge=2, description="tokens of context bound to each target")
    capacity: int = Field(65536, gt=0, description="slots per store (hash table size)")
    lanes: int = Field(4, gt=0, description="phase lanes per slot for paradoxical targets")
    episodes: int = Field(32768, gt=0, description="registry size: distinct (context, lane) bindings remembered")
    recency: float = Field(
        0.0, ge=0.0, description="similarity weight of position i: φ^(−recency·(n−1−i)); 0 = uniform"
    )
    mode: Literal["exact", "general", "backoff"] = Field(
        "general", description="read the own slot only, generalise by similarity, or prefix/suffix back-off"
    )
    seed: int = Field(0, description="seed of the token embeddings")

    def build(self):
        raise ConfigError(
            "model.family 'holographic' has no Flax model to train: evaluate it with "
            "python evaluate.py --suite holographic --config configs/holographic.yaml"
        )
