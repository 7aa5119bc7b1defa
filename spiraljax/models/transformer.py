"""Dense causal Transformer baseline: pre-norm, RoPE, smeared keys, SwiGLU/GELU MLP, tied or untied embeddings,
optional LoRA adapters on the block projections (``lora_rank``)."""
from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from pydantic import Field

from spiraljax.config import ModelConfig, register_model_config
from spiraljax.models.registry import register
from spiraljax.nn.layers import Block, lora_dense


@register_model_config("transformer")
class TransformerConfig(ModelConfig):
    family: Literal["transformer"] = "transformer"
    mlp_ratio: float = Field(4.0, gt=0)
    mlp_kind: Literal["swiglu", "gelu"] = "swiglu"
    tie_embeddings: bool = True
    window: int | None = Field(None, gt=0)
    # per-head smeared keys (spiraljax.nn.layers.smear_keys): without them the 2-layer baseline does not
    # form induction heads at our budgets (docs/notes/recall.md); false gives the plain attention
    smear_keys: bool = True
    lora_rank: int = Field(0, ge=0)         # LoRA adapters of rank r on every block projection (0 = none)
    lora_alpha: float = Field(16.0, gt=0)   # LoRA scale α (the adapter adds (α/r)·x A B)


class Transformer(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool = False, step: int | jax.Array = 0):
        cfg = self.cfg
        dtype = jnp.dtype(cfg.dtype)
        embed = nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=nn.initializers.normal(0.02), name="embed")
        x = embed(tokens).astype(dtype)
        x = nn.Dropout(cfg.dropout, deterministic=not train)(x)
        hidden = int(cfg.mlp_ratio * cfg.d_model * (2 / 3 if cfg.mlp_kind == "swiglu" else 1))
        attend = None
        if cfg.window is not None:
            from functools import partial

            from spiraljax.ops.attention import causal_attention

            attend = partial(causal_attention, window=cfg.window)
        dense = lora_dense(cfg.lora_rank, cfg.lora_alpha, dtype)
        for i in range(cfg.n_layers):
            x = Block(cfg.n_heads, hidden, cfg.mlp_kind, cfg.dropout, dtype, attend=attend, smear=cfg.smear_keys,
                      dense=dense, name=f"block_{i}")(x, train=train)
        x = nn.LayerNorm(dtype=dtype, name="ln_f")(x)
        if cfg.tie_embeddings:
            logits = embed.attend(x.astype(jnp.float32))
        else:
            logits = nn.Dense(cfg.vocab_size, use_bias=False, name="head")(x)
        return logits.astype(jnp.float32), {}


@register("transformer")
def build(cfg: TransformerConfig) -> nn.Module:
    return Transformer(cfg)
