"""Dense causal Transformer baseline: pre-norm, RoPE, smeared keys, SwiGLU/GELU MLP, tied or untied embeddings,
optional LoRA adapters on the block projections (``lora_rank``); dense or local (sliding-window) attention,
and a Transformer-XL key/value cache carried across windows (``state=``, docs/long_context_attention.md)."""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from pydantic import Field, model_validator

from spiraljax.config import AttentionConfig, DType, Dropout, LoraAlpha, LoraRank, Remat
from spiraljax.nn.layers import Block, init_cache, lora_dense
from spiraljax.nn.precision import compute_dtype, maybe_remat
from spiraljax.ops.attention import local_attention
from spiraljax.state import check_state_like


class TransformerConfig(AttentionConfig):
    family: Literal["transformer"] = "transformer"
    dropout: Dropout = 0.0
    dtype: DType = "float32"
    remat: Remat = False
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width as a multiple of d_model (×2/3 for swiglu)")
    mlp_kind: Literal["swiglu", "gelu"] = Field("swiglu", description="MLP of each block")
    tie_embeddings: bool = Field(True, description="the output head reuses the token embedding")
    attention: Literal["dense", "local"] = Field(
        "dense", description="dense: every earlier key; local: the last `window` keys (sliding window)"
    )
    window: int | None = Field(
        None,
        gt=0,
        description="attention: local: keys per query w (query t attends "
        "t-w+1 … t; w = ⌈log₂T⌉+1 costs what spiral "
        "attention does); only with local (a config with a window "
        "and no attention key means local)",
    )
    local_impl: Literal["auto", "blocked", "dense"] = Field(
        "auto",
        description="local attention: blocks of w "
        "queries (blocked, O(T·w)), the masked T×T form (dense), "
        "or auto (spiraljax.ops.impl); same numbers to float "
        "tolerance",
    )
    cache_len: int | None = Field(
        None,
        ge=0,
        description="keys/values per layer carried to the next window with "
        "state= (Transformer-XL cache; null: seq_len for dense, "
        "window-1 for local)",
    )
    # without smeared keys the 2-layer baseline does not form induction heads at our budgets (docs/notes/recall.md)
    smear_keys: bool = Field(
        True, description="per-head smeared keys k_j <- m k_j + (1-m) k_{j-1} (false: plain attention)"
    )
    lora_rank: LoraRank = 0
    lora_alpha: LoraAlpha = 16.0

    @model_validator(mode="before")
    @classmethod
    def _window_alone_means_local(cls, data: Any) -> Any:
        """Configs written before ``attention`` existed used ``window: w`` for a sliding window (then
        computed as a masked dense attention): the same attention as ``local``."""
        if isinstance(data, dict) and data.get("window") is not None and "attention" not in data:
            data = {**data, "attention": "local"}
        return data

    @model_validator(mode="after")
    def _local_needs_window(self) -> "TransformerConfig":
        if self.attention == "local" and self.window is None:
            raise ValueError("attention: local needs model.window (keys per query, e.g. ⌈log₂ seq_len⌉+1)")
        if self.attention == "dense" and self.window is not None:
            raise ValueError(
                f"model.window={self.window} is the width of attention: local; dense attention "
                "attends every earlier key (set model.attention=local, or window: null)"
            )
        if self.attention == "dense" and self.local_impl != "auto":
            raise ValueError("model.local_impl applies to attention: local only")
        return self

    @property
    def cache_length(self) -> int:
        """M: keys per layer in the carried cache (``cache_len``, default seq_len / window − 1)."""
        if self.cache_len is not None:
            return self.cache_len
        return self.window - 1 if self.attention == "local" else self.seq_len

    def build(self) -> nn.Module:
        return Transformer(self)


class Transformer(nn.Module):
    cfg: TransformerConfig

    def initial_state(self, batch_size: int) -> dict:
        """The state before a document (docs/carried_state.md): per layer an empty key/value cache of
        ``cache_len`` slots, ``{"layers": {"block_i": {k, v [B, M, H, D], valid [B, M], prev_key [B, H, D]}}}``
        (:func:`spiraljax.nn.layers.init_cache`)."""
        cfg = self.cfg
        head_dim = cfg.d_model // cfg.n_heads
        return {
            "layers": {
                f"block_{i}": init_cache(batch_size, cfg.cache_length, cfg.n_heads, head_dim)
                for i in range(cfg.n_layers)
            }
        }

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool = False, step: int | jax.Array = 0, state: dict | None = None):
        """Next-token logits of a causal window.

        Args:
          tokens: ``[B, T]`` int token ids (RoPE positions 0..T−1 of the window).
          train: apply dropout (needs a ``"dropout"`` rng).
          step: the training step; unused here (every family takes it).
          state: the carried key/value caches (:meth:`initial_state`, or ``aux["state"]`` of the previous
            window); None: the window alone (no cache).

        Returns:
          ``(logits, aux)``: ``logits [B, T, vocab_size]`` float32, position t predicting token t+1 from
          tokens ≤ t (and the cached keys); ``aux`` empty, or ``{"state": the caches after this window}``.
        """
        cfg = self.cfg
        dtype = compute_dtype(cfg.dtype)  # of the blocks; the residual stream stays float32 (nn.precision)
        embed = nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=nn.initializers.normal(0.02), name="embed")
        x = embed(tokens)
        x = nn.Dropout(cfg.dropout, deterministic=not train)(x)
        hidden = int(cfg.mlp_ratio * cfg.d_model * (2 / 3 if cfg.mlp_kind == "swiglu" else 1))
        attend = None  # dense causal (with a cache: over its valid keys too)
        if cfg.attention == "local":
            attend = partial(local_attention, window=cfg.window, impl=cfg.local_impl)
        if state is not None:
            check_state_like(state, self.initial_state(tokens.shape[0]))
        dense = lora_dense(cfg.lora_rank, cfg.lora_alpha, dtype)
        block = maybe_remat(Block, cfg.remat, static_argnums=(2,))  # train: positional and static
        new_layers = {}
        for i in range(cfg.n_layers):
            layer = block(
                cfg.n_heads,
                hidden,
                cfg.mlp_kind,
                cfg.dropout,
                dtype,
                attend=attend,
                smear=cfg.smear_keys,
                dense=dense,
                name=f"block_{i}",
            )
            if state is None:
                x = layer(x, train)
            else:
                x, new_layers[f"block_{i}"] = layer(x, train, state["layers"][f"block_{i}"])
        x = nn.LayerNorm(name="ln_f")(x)
        if cfg.tie_embeddings:
            logits = embed.attend(x.astype(jnp.float32))
        else:
            logits = nn.Dense(cfg.vocab_size, use_bias=False, name="head")(x)
        return logits.astype(jnp.float32), ({} if state is None else {"state": {"layers": new_layers}})
