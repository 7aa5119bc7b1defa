"""Dense causal Transformer baseline: pre-norm, RoPE, smeared keys, SwiGLU/GELU MLP, tied or untied embeddings,
optional LoRA adapters on the block projections (``lora_rank``)."""
from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from pydantic import Field

from spiraljax.config import AttentionConfig, DType, Dropout, LoraAlpha, LoraRank, Remat
from spiraljax.nn.layers import Block, lora_dense
from spiraljax.nn.precision import compute_dtype, maybe_remat


class TransformerConfig(AttentionConfig):
    family: Literal["transformer"] = "transformer"
    dropout: Dropout = 0.0
    dtype: DType = "float32"
    remat: Remat = False
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width as a multiple of d_model (×2/3 for swiglu)")
    mlp_kind: Literal["swiglu", "gelu"] = Field("swiglu", description="MLP of each block")
    tie_embeddings: bool = Field(True, description="the output head reuses the token embedding")
    window: int | None = Field(None, gt=0, description="sliding attention window in tokens (null = full causal)")
    # without smeared keys the 2-layer baseline does not form induction heads at our budgets (docs/notes/recall.md)
    smear_keys: bool = Field(True, description="per-head smeared keys k_j <- m k_j + (1-m) k_{j-1} (false: plain "
                                               "attention)")
    lora_rank: LoraRank = 0
    lora_alpha: LoraAlpha = 16.0

    def build(self) -> nn.Module:
        return Transformer(self)


class Transformer(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool = False, step: int | jax.Array = 0):
        """Next-token logits of a causal window.

        Args:
          tokens: ``[B, T]`` int token ids, T ≤ ``seq_len`` (RoPE positions 0..T−1).
          train: apply dropout (needs a ``"dropout"`` rng).
          step: the training step; unused here (every family takes it).

        Returns:
          ``(logits, aux)``: ``logits [B, T, vocab_size]`` float32, position t predicting token t+1 from
          tokens ≤ t; ``aux`` an empty dict (the baseline exposes no internals).
        """
        cfg = self.cfg
        dtype = compute_dtype(cfg.dtype)  # of the blocks; the residual stream stays float32 (nn.precision)
        embed = nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=nn.initializers.normal(0.02), name="embed")
        x = embed(tokens)
        x = nn.Dropout(cfg.dropout, deterministic=not train)(x)
        hidden = int(cfg.mlp_ratio * cfg.d_model * (2 / 3 if cfg.mlp_kind == "swiglu" else 1))
        attend = None
        if cfg.window is not None:
            from functools import partial

            from spiraljax.ops.attention import causal_attention

            attend = partial(causal_attention, window=cfg.window)
        dense = lora_dense(cfg.lora_rank, cfg.lora_alpha, dtype)
        block = maybe_remat(Block, cfg.remat, static_argnums=(2,))  # train: positional and static
        for i in range(cfg.n_layers):
            x = block(cfg.n_heads, hidden, cfg.mlp_kind, cfg.dropout, dtype, attend=attend, smear=cfg.smear_keys,
                      dense=dense, name=f"block_{i}")(x, train)
        x = nn.LayerNorm(name="ln_f")(x)
        if cfg.tie_embeddings:
            logits = embed.attend(x.astype(jnp.float32))
        else:
            logits = nn.Dense(cfg.vocab_size, use_bias=False, name="head")(x)
        return logits.astype(jnp.float32), {}
