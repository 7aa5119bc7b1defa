"""Dense causal attention and rotary position codes (shapes ``[B, T, H, D]``)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def rope_angles(positions: jax.Array, dim: int, base: float = 10000.0) -> jax.Array:
    """Angles ``pos * base^(-2i/dim)`` for i < dim/2.

    Args:
      positions: ``[...]`` integer (or real) positions.
      dim: feature size D (even).
      base: frequency base.

    Returns:
      ``[..., D/2]`` float32 angles.
    """
    inv_freq = base ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
    return positions.astype(jnp.float32)[..., None] * inv_freq


def apply_rope(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
    """Rotate-half RoPE: ``[x1, x2] -> [x1 cos - x2 sin, x2 cos + x1 sin]`` along the last axis,
    angles from :func:`rope_angles`. A rotation per frequency pair, so norms are kept and
    ``⟨rope(q, m), rope(k, n)⟩`` depends on the positions only through ``m − n``.

    Args:
      x: ``[B, T, H, D]`` or ``[B, T, D]``, D even.
      positions: ``[T]`` position of every time step.
      base: frequency base.

    Returns:
      Same shape and dtype as ``x`` (computed in fp32).
    """
    chex.assert_rank(x, {3, 4})
    chex.assert_rank(positions, 1)
    chex.assert_axis_dimension(x, 1, positions.shape[0])
    chex.assert_is_divisible(x.shape[-1], 2)
    dim = x.shape[-1]
    ang = rope_angles(positions, dim, base)  # [T, D/2]
    if x.ndim == 4:
        ang = ang[:, None, :]
    cos, sin = jnp.cos(ang), jnp.sin(ang)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def causal_mask(n: int, window: int | None = None) -> jax.Array:
    """Query i sees key j iff ``j <= i`` (and ``i - j < window`` if given).

    Args:
      n: sequence length T.
      window: optional sliding-window size.

    Returns:
      Bool ``[T, T]`` (query, key).
    """
    i = jnp.arange(n)[:, None]
    j = jnp.arange(n)[None, :]
    allowed = j <= i
    if window is not None:
        allowed &= (i - j) < window
    return allowed


# what a disallowed score becomes on the fast path: finite, so a row with no allowed entry gives no NaN,
# and far enough below any real score that exp(it − row max) is exactly 0 in float32
_MASKED = float(jnp.finfo(jnp.float32).min)


def masked_softmax(scores: jax.Array, mask: jax.Array, *, empty_rows: bool = True) -> jax.Array:
    """``w = exp(s − max) · mask / Σ exp(s − max) · mask`` over the last axis; a row with no allowed
    entry is all zeros.

    The fast path of :func:`masked_softmax_reference` (same values and gradients, tested): disallowed
    scores become the most negative float32 and ``jax.nn.softmax`` (max, exp, sum, divide — XLA fuses
    them into two passes) runs over the row. A row with no allowed entry would come out uniform; it is
    zeroed by the factor ``any(mask)`` over the row, computed on the mask's own (broadcast) shape.
    Callers whose every row has an allowed entry (a causal mask always allows the diagonal) pass
    ``empty_rows=False`` and skip that factor.

    Args:
      scores: ``[..., S]`` logits.
      mask: bool, broadcastable to ``scores``.
      empty_rows: some row may have no allowed entry (False only when that is impossible).

    Returns:
      ``[..., S]`` float32 weights.
    """
    w = jax.nn.softmax(jnp.where(mask, scores.astype(jnp.float32), _MASKED), axis=-1)
    if empty_rows:
        w = w * jnp.any(mask, axis=-1, keepdims=True)
    return w


def masked_softmax_reference(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """Reference of :func:`masked_softmax`, written as the formula: ``−inf`` on disallowed entries, the
    row max (0 for an empty row), ``exp`` kept only where allowed, divided by the row sum.

    Args:
      scores: ``[..., S]`` logits.
      mask: bool, broadcastable to ``scores``.

    Returns:
      ``[..., S]`` float32 weights.
    """
    scores = jnp.where(mask, scores.astype(jnp.float32), -jnp.inf)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    w = jnp.where(mask, jnp.exp(scores - row_max), 0.0)
    return w / jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), 1e-30)


def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *,
                     empty_rows: bool = True) -> jax.Array:
    """softmax(q·kᵀ/√D + mask) v. Rows with no allowed key return zeros (never NaN).

    Args:
      q: ``[B, T, H, D]`` queries.
      k: ``[B, S, H, D]`` keys.
      v: ``[B, S, H, Dv]`` values.
      mask: bool, broadcastable to ``[B, H, T, S]`` (True = may attend).
      empty_rows: some query may have no allowed key (False only when that is impossible; it skips
        :func:`masked_softmax`'s zeroing of such rows).

    Returns:
      ``[B, T, H, Dv]``.
    """
    chex.assert_rank([q, k, v], 4)
    chex.assert_equal_shape([q, k], dims=(0, 2, 3))
    chex.assert_equal_shape_prefix([k, v], 3)
    scores = jnp.einsum("bthd,bshd->bhts", q, k) * q.shape[-1] ** -0.5
    w = masked_softmax(scores, mask, empty_rows=empty_rows)
    return jnp.einsum("bhts,bshd->bthd", w.astype(v.dtype), v)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, window: int | None = None) -> jax.Array:
    """Dense causal (optionally sliding-window) softmax attention, O(T²):
    ``o_i = Σ_{j ≤ i, i − j < window} softmax_j(q_i·k_j/√D) v_j``.

    Args:
      q: ``[B, T, H, D]``.
      k: ``[B, T, H, D]``.
      v: ``[B, T, H, Dv]``.
      window: optional sliding-window size.

    Returns:
      ``[B, T, H, Dv]``.
    """
    chex.assert_rank([q, k, v], 4)
    chex.assert_equal_shape([q, k])
    chex.assert_equal_shape_prefix([q, v], 3)
    return masked_attention(q, k, v, causal_mask(q.shape[1], window), empty_rows=False)  # the diagonal is allowed
