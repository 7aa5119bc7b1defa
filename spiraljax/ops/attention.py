"""Dense causal attention, sliding-window (local) attention and rotary position codes (shapes
``[B, T, H, D]``; keys may carry a cache of earlier positions in front: ``[B, S, H, D]``, S ≥ T)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from spiraljax.ops.impl import Impl, resolve


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


def causal_mask(n: int, window: int | None = None, n_keys: int | None = None) -> jax.Array:
    """Query i sees key j iff ``j <= i + P`` (and ``i + P - j < window`` if given), ``P = n_keys − n``.

    The queries are the last ``n`` of ``n_keys`` positions (the first ``P`` keys are a cache of earlier
    positions); ``n_keys = None`` is ``n`` (``P = 0``: the plain causal mask).

    Args:
      n: number of queries T.
      window: optional sliding-window size.
      n_keys: number of keys S ≥ T (default T).

    Returns:
      Bool ``[T, S]`` (query, key).
    """
    s = n if n_keys is None else n_keys
    i = jnp.arange(n)[:, None] + (s - n)
    j = jnp.arange(s)[None, :]
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


def masked_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, empty_rows: bool = True
) -> jax.Array:
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


def check_prefix_keys(q: jax.Array, k: jax.Array, v: jax.Array, key_valid: jax.Array | None) -> None:
    """Shapes of an attention whose queries are the last T of S ≥ T keys (the first S − T: a cache)."""
    chex.assert_rank([q, k, v], 4)
    chex.assert_equal_shape([q, k], dims=(0, 2, 3))
    chex.assert_equal_shape_prefix([k, v], 3)
    if k.shape[1] < q.shape[1]:
        raise AssertionError(f"keys {k.shape} are fewer than the queries {q.shape} (the queries are the last T keys)")
    if key_valid is not None:
        chex.assert_shape(key_valid, k.shape[:2])


def causal_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, window: int | None = None, *, key_valid: jax.Array | None = None
) -> jax.Array:
    """Dense causal (optionally sliding-window) softmax attention, O(T·S):
    ``o_i = Σ_{j ≤ i+P, i+P − j < window, valid_j} softmax_j(q_i·k_j/√D) v_j``.

    The queries are the last T of the S keys (``P = S − T`` cached keys of earlier positions come first;
    ``S = T``: plain causal attention). This is also the reference of :func:`local_attention`.

    Args:
      q: ``[B, T, H, D]``.
      k: ``[B, S, H, D]``, S ≥ T.
      v: ``[B, S, H, Dv]``.
      window: optional sliding-window size.
      key_valid: optional bool ``[B, S]``: keys that exist (e.g. filled cache slots).

    Returns:
      ``[B, T, H, Dv]``.
    """
    check_prefix_keys(q, k, v, key_valid)
    mask = causal_mask(q.shape[1], window, k.shape[1])
    if key_valid is None:
        return masked_attention(q, k, v, mask, empty_rows=False)  # the diagonal is allowed
    return masked_attention(q, k, v, mask & key_valid[:, None, None, :])


def local_attention_blocked(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    window: int,
    *,
    key_valid: jax.Array | None = None,
    block: int | None = None,
) -> jax.Array:
    """Sliding-window attention in O(S·w) time and memory: :func:`causal_attention` with ``window`` (same
    values and gradients, tested), without an S×S array.

    The S key positions are cut into blocks of ``c ≥ w`` (default ``c = w``; ``c = S`` when ``w ≥ S``).
    Query i of block n needs keys ``i − w + 1 … i``, which lie in block n or n − 1, so each block of
    queries scores its own and the previous block of keys (``[c, 2c]``, masked to ``0 ≤ i − j < w``).
    The first ``S − T`` positions (the cache) get zero queries whose outputs are dropped.

    Args:
      q: ``[B, T, H, D]``; k: ``[B, S, H, D]``, S ≥ T; v: ``[B, S, H, Dv]``.
      window: w ≥ 1 keys per query.
      key_valid: optional bool ``[B, S]``.
      block: block size c (raised to at least w, capped at S).

    Returns:
      ``[B, T, H, Dv]``.
    """
    check_prefix_keys(q, k, v, key_valid)
    if window < 1:
        raise ValueError(f"local attention window must be >= 1, got {window}")
    b, t, h, d = q.shape
    s = k.shape[1]
    c = min(max(block or window, window), s)
    n = -(-s // c)
    pad = n * c - s
    q = jnp.pad(q, ((0, 0), (s - t, pad), (0, 0), (0, 0)))  # queries aligned with the keys
    k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (k, v))
    valid = jnp.ones((b, s), bool) if key_valid is None else key_valid
    valid = jnp.pad(valid, ((0, 0), (0, pad)))

    def with_previous(x):  # [B, n·c, ...] → [B, n, 2c, ...]: the previous block (zeros before block 0), then the own
        x = x.reshape(b, n, c, *x.shape[2:])
        prev = jnp.pad(x, ((0, 0), (1, 0)) + ((0, 0),) * (x.ndim - 2))[:, :-1]
        return jnp.concatenate([prev, x], axis=2)

    kb, vb = with_previous(k), with_previous(v)
    vk = with_previous(valid)  # block 0's "previous" keys: padding, invalid
    qb = q.reshape(b, n, c, h, d)
    diff = jnp.arange(c)[:, None] + c - jnp.arange(2 * c)[None, :]  # i − j within a block pair
    mask = ((diff >= 0) & (diff < window))[None, None, None] & vk[:, :, None, None, :]  # [B, n, 1, c, 2c]
    scores = jnp.einsum("bnqhd,bnkhd->bnhqk", qb, kb) * d**-0.5
    # a query whose own key is valid never has an empty row; the padded queries' rows are dropped
    w = masked_softmax(scores, mask, empty_rows=key_valid is not None)
    out = jnp.einsum("bnhqk,bnkhd->bnqhd", w.astype(vb.dtype), vb).reshape(b, n * c, h, -1)
    return out[:, s - t : s]


def local_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    window: int,
    *,
    key_valid: jax.Array | None = None,
    impl: str | Impl = Impl.AUTO,
) -> jax.Array:
    """Sliding-window causal attention: query i attends keys ``i − w + 1 … i`` (that exist and are valid).

    ``impl`` (resolved in :mod:`spiraljax.ops.impl`): ``blocked`` (:func:`local_attention_blocked`,
    O(S·w)), ``dense`` (the reference :func:`causal_attention` with ``window``, O(T·S)) or ``auto``.

    Args:
      q: ``[B, T, H, D]``; k: ``[B, S, H, D]``, S ≥ T (the first S − T keys: a cache); v: ``[B, S, H, Dv]``.
      window: w ≥ 1.
      key_valid: optional bool ``[B, S]``.
      impl: "auto" | "blocked" | "dense" (or an :class:`~spiraljax.ops.impl.Impl`).

    Returns:
      ``[B, T, H, Dv]``.
    """
    which = resolve("local_attention", impl, length=k.shape[1], window=window)
    if which is Impl.BLOCKED:
        return local_attention_blocked(q, k, v, window, key_valid=key_valid)
    return causal_attention(q, k, v, window, key_valid=key_valid)
