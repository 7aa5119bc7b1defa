"""Dense causal attention and rotary position codes (shapes ``[B, T, H, D]``)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def rope_angles(positions: jax.Array, dim: int, base: float = 10000.0) -> jax.Array:
    """Angles ``pos * base^(-2i/dim)`` for i < dim/2; returns ``[..., dim/2]``."""
    inv_freq = base ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
    return positions.astype(jnp.float32)[..., None] * inv_freq


def apply_rope(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
    """Rotate-half RoPE: ``[x1, x2] -> [x1 cos - x2 sin, x2 cos + x1 sin]`` along the last axis.

    ``x`` is ``[B, T, H, D]`` (or ``[B, T, D]``), ``positions`` is ``[T]``.
    """
    dim = x.shape[-1]
    ang = rope_angles(positions, dim, base)  # [T, D/2]
    if x.ndim == 4:
        ang = ang[:, None, :]
    cos, sin = jnp.cos(ang), jnp.sin(ang)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def causal_mask(n: int, window: int | None = None) -> jax.Array:
    """Bool ``[n, n]``: query i sees key j iff ``j <= i`` (and ``i - j < window`` if given)."""
    i = jnp.arange(n)[:, None]
    j = jnp.arange(n)[None, :]
    allowed = j <= i
    if window is not None:
        allowed &= (i - j) < window
    return allowed


def masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax over the last axis restricted to ``mask``; a row with no allowed entry is all zeros."""
    scores = jnp.where(mask, scores.astype(jnp.float32), -jnp.inf)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    w = jnp.where(mask, jnp.exp(scores - row_max), 0.0)
    return w / jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), 1e-30)


def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """softmax(q·kᵀ/√D + mask) v with a boolean mask broadcastable to ``[B, H, T, S]``.

    Rows with no allowed key return zeros (never NaN).
    """
    scores = jnp.einsum("bthd,bshd->bhts", q, k) * q.shape[-1] ** -0.5
    w = masked_softmax(scores, mask)
    return jnp.einsum("bhts,bshd->bthd", w.astype(v.dtype), v)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, window: int | None = None) -> jax.Array:
    """Dense causal (optionally sliding-window) softmax attention, O(T²)."""
    return masked_attention(q, k, v, causal_mask(q.shape[1], window))
