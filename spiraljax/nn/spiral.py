"""Spiralformer layers: spiral self-attention with LoRA-capable projections, a breath-gated block."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from spiraljax.nn.layers import smear_keys
from spiraljax.nn.lora import LoRADense
from spiraljax.ops.attention import apply_rope
from spiraljax.ops.spiral import spiral_attention


class SpiralSelfAttention(nn.Module):
    """Spiral sparse self-attention with RoPE; ``smear``: per-head smeared keys as in
    :class:`spiraljax.nn.layers.SelfAttention`."""

    n_heads: int
    offsets: Sequence[int]
    impl: str = "sparse"
    lora_rank: int = 0
    lora_alpha: float = 16.0
    smear: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, key_mask: jax.Array | None) -> jax.Array:
        b, t, d = x.shape
        hd = d // self.n_heads
        qkv = LoRADense(3 * d, self.lora_rank, self.lora_alpha, name="qkv")(x).reshape(b, t, 3, self.n_heads, hd)
        pos = jnp.arange(t)
        q, k, v = apply_rope(qkv[:, :, 0], pos), apply_rope(qkv[:, :, 1], pos), qkv[:, :, 2]
        if self.smear:
            k = smear_keys(k, nn.sigmoid(self.param("smear", nn.initializers.zeros, (self.n_heads,))))
        out = spiral_attention(q, k, v, offsets=self.offsets, key_mask=key_mask, impl=self.impl)
        return LoRADense(d, self.lora_rank, self.lora_alpha, name="out")(out.reshape(b, t, d))


class SpiralBlock(nn.Module):
    """``x ← x + w_t · g_t · Attn(LN x)``, ``x ← x + w_t · MLP(LN x)``.

    ``w_t`` is the breath weight of position t (pause → 0: the block is skipped there), ``g_t`` the
    silence gate times the rhythmic-attention gate; ``drop_rates`` the per-position (contemplative)
    dropout rates.
    """

    n_heads: int
    mlp_hidden: int
    offsets: Sequence[int]
    impl: str = "sparse"
    lora_rank: int = 0
    lora_alpha: float = 16.0
    smear: bool = False

    @nn.compact
    def __call__(self, x, key_mask, breath_w, attn_gate, drop_rates, train: bool = False):
        from spiraljax.ops.rhythm import phase_dropout

        def drop(h):
            if not train:
                return h
            return phase_dropout(h, jnp.broadcast_to(drop_rates, h.shape[:-1]), self.make_rng("dropout"))

        a = SpiralSelfAttention(self.n_heads, self.offsets, self.impl, self.lora_rank, self.lora_alpha,
                                self.smear, name="attn")(nn.LayerNorm()(x), key_mask)
        x = x + breath_w[..., None] * drop(a * attn_gate[..., None])
        h = nn.LayerNorm()(x)
        h = nn.gelu(LoRADense(self.mlp_hidden, self.lora_rank, self.lora_alpha, name="mlp_up")(h))
        h = LoRADense(x.shape[-1], self.lora_rank, self.lora_alpha, name="mlp_down")(h)
        return x + breath_w[..., None] * drop(h)
