"""Spiralformer's block: the shared attention / MLP layers (:mod:`spiraljax.nn.layers`) with spiral
sparse attention and LoRA-capable projections, gated by the breath clock."""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from spiraljax.nn.layers import MLP, SelfAttention, lora_dense
from spiraljax.ops.rhythm import phase_dropout
from spiraljax.ops.spiral import spiral_attention


def _spiral_over_valid_keys(q, k, v, *, key_valid, offsets, impl):
    """:func:`spiral_attention` with ``key_valid`` (cache + window) as its key mask."""
    return spiral_attention(q, k, v, offsets=offsets, key_mask=key_valid, impl=impl)


class SpiralBlock(nn.Module):
    """``x ← x + w_t · g_t · Attn(LN x)``, ``x ← x + w_t · MLP(LN x)``.

    ``Attn`` is :class:`~spiraljax.nn.layers.SelfAttention` (RoPE, optional smeared keys) with
    ``attend`` = :func:`~spiraljax.ops.spiral.spiral_attention` over ``offsets`` (PAD keys removed by
    ``key_mask [B, T]``), MLP the shared GELU :class:`~spiraljax.nn.layers.MLP` (``mlp/up``,
    ``mlp/down``); every projection is a :class:`~spiraljax.nn.lora.LoRADense` of rank ``lora_rank``.
    ``w_t`` is the breath weight of position t (pause → 0: the block is skipped there), ``g_t`` the
    silence gate times the rhythmic-attention gate; ``drop_rates`` the per-position (contemplative)
    dropout rates, or None when every rate is 0 (no dropout and no RNG draw: a zero rate keeps every
    unit, so skipping changes no number). ``dtype``: compute dtype of the
    projections and the MLP (queries/keys, scores, gates and the residual stream stay float32:
    :mod:`spiraljax.nn.precision`).

    With ``cache`` (a layer cache of :func:`~spiraljax.nn.layers.init_cache`, its ``valid`` = usable
    key) the window's queries attend the cached keys and their own (the offsets are those of the
    cache + window length, given in ``offsets``), ``key_mask`` ``[B, T]`` (or None: all usable) marks
    the window's usable keys, and the call returns ``(x, new_cache)``.
    """

    n_heads: int
    mlp_hidden: int
    offsets: Sequence[int]
    impl: str = "sparse"
    lora_rank: int = 0
    lora_alpha: float = 16.0
    smear: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        key_mask: jax.Array | None,
        breath_w: jax.Array,
        attn_gate: jax.Array,
        drop_rates: jax.Array | None,
        train: bool = False,
        cache: dict[str, jax.Array] | None = None,
    ):
        def drop(h):
            if not train or drop_rates is None:
                return h
            return phase_dropout(h, jnp.broadcast_to(drop_rates, h.shape[:-1]), self.make_rng("dropout"))

        dense = lora_dense(self.lora_rank, self.lora_alpha, self.dtype)
        if cache is None:
            attend = partial(spiral_attention, offsets=self.offsets, key_mask=key_mask, impl=self.impl)
        else:  # the usable keys of cache + window come in as key_valid (SelfAttention)
            attend = partial(_spiral_over_valid_keys, offsets=self.offsets, impl=self.impl)
        attention = SelfAttention(self.n_heads, attend=attend, smear=self.smear, dense=dense, name="attn")
        if cache is None:
            a = attention(nn.LayerNorm(dtype=self.dtype)(x))
        else:
            a, cache = attention(nn.LayerNorm(dtype=self.dtype)(x), cache, key_mask)
        x = x + breath_w[..., None] * drop(a * attn_gate[..., None])
        h = MLP(self.mlp_hidden, "gelu", self.dtype, dense, draws_as="mlp_", name="mlp")(
            nn.LayerNorm(dtype=self.dtype)(x)
        )
        x = x + breath_w[..., None] * drop(h)
        return x if cache is None else (x, cache)
