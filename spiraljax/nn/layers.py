"""Shared Flax building blocks: attention with RoPE (and optional smeared keys), MLP, pre-norm Transformer block."""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from spiraljax.ops.attention import apply_rope, causal_attention

AttentionFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def smear_keys(k: jax.Array, mix: jax.Array) -> jax.Array:
    """Smeared keys (Olsson et al., 2022): ``k̃_j = m_h k_j + (1 − m_h) k_{j−1}`` with ``k_{−1} = 0``.

    ``k`` is ``[B, T, H, D]``, ``mix`` ``[H]`` in (0, 1). Causal: k̃_j depends on positions ≤ j only.
    A query then matches position j on the content of j − 1, so a single head can do what an
    induction circuit otherwise needs a previous-token head in an earlier layer for.
    """
    prev = jnp.pad(k, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]
    m = mix.astype(k.dtype)[:, None]
    return m * k + (1.0 - m) * prev


class SelfAttention(nn.Module):
    """Multi-head self-attention with RoPE; ``attend(q, k, v)`` picks the pattern (dense causal by default).

    ``smear``: keys (after RoPE) are smeared with the previous position's key by a learned per-head
    ``m_h = σ(w_h)``, ``w_h`` initialised to 0 (see :func:`smear_keys`).
    """

    n_heads: int
    dtype: jnp.dtype = jnp.float32
    rope: bool = True
    attend: AttentionFn | None = None
    smear: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, d = x.shape
        head_dim = d // self.n_heads
        qkv = nn.DenseGeneral((3, self.n_heads, head_dim), use_bias=False, dtype=self.dtype, name="qkv")(x)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.rope:
            pos = jnp.arange(t)
            q, k = apply_rope(q, pos), apply_rope(k, pos)
        if self.smear:
            k = smear_keys(k, nn.sigmoid(self.param("smear", nn.initializers.zeros, (self.n_heads,))))
        out = (self.attend or causal_attention)(q, k, v)
        return nn.DenseGeneral(d, axis=(-2, -1), use_bias=False, dtype=self.dtype, name="out")(out)


class MLP(nn.Module):
    """Position-wise MLP: SwiGLU ``W2 (silu(W1 x) * W3 x)`` or GELU ``W2 gelu(W1 x)``."""

    hidden: int
    kind: str = "swiglu"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        if self.kind == "swiglu":
            h = nn.silu(nn.Dense(self.hidden, use_bias=False, dtype=self.dtype, name="gate")(x))
            h = h * nn.Dense(self.hidden, use_bias=False, dtype=self.dtype, name="up")(x)
        else:
            h = nn.gelu(nn.Dense(self.hidden, use_bias=False, dtype=self.dtype, name="up")(x))
        return nn.Dense(d, use_bias=False, dtype=self.dtype, name="down")(h)


class Block(nn.Module):
    """Pre-norm block: ``x + Attn(LN x)``, then ``x + MLP(LN x)`` (dropout on both branches)."""

    n_heads: int
    mlp_hidden: int
    mlp_kind: str = "swiglu"
    dropout: float = 0.0
    dtype: jnp.dtype = jnp.float32
    attend: AttentionFn | None = None
    smear: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        drop = nn.Dropout(self.dropout, deterministic=not train)
        h = SelfAttention(self.n_heads, self.dtype, attend=self.attend, smear=self.smear, name="attn")(
            nn.LayerNorm(dtype=self.dtype)(x))
        x = x + drop(h)
        h = MLP(self.mlp_hidden, self.mlp_kind, self.dtype, name="mlp")(nn.LayerNorm(dtype=self.dtype)(x))
        return x + drop(h)
