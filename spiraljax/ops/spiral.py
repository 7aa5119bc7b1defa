"""Causal spiral sparse attention.

Query i may attend key j iff ``i - j ∈ offsets`` and ``j ≥ 0``; the default offset set is
``{0} ∪ {2^k : 2^k < n}`` so each row has at most ⌊log2 i⌋ + 2 keys (density ≈ (log2 n + 1)/n).

Two implementations with identical results (chosen by ``impl``, resolved in :mod:`spiraljax.ops.impl`):

* ``dense``  — reference: full q·kᵀ with the boolean ``[n, n]`` mask, O(n²).
* ``sparse`` — for each offset o, shift k and v by o along time (pad the front, slice),
  score ``s_o = ⟨q_i, k_{i−o}⟩/√D``, softmax over the offset axis, weighted sum of shifted v.
  O(n·|offsets|) compute and memory; no n×n array is built.

Keys may carry a cache: with ``S > T`` keys the queries are the last T positions (query i is position
``P + i``, ``P = S − T``) and attend keys ``P + i − o``; ``key_mask [B, S]`` marks the usable ones.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spiraljax.ops.attention import check_prefix_keys, masked_attention, masked_softmax
from spiraljax.ops.constants import PHI
from spiraljax.ops.impl import Impl, resolve


def powers_of_two(n: int) -> list[int]:
    """``{0} ∪ {2^k : 2^k < n}``.

    Args:
      n: sequence length T.

    Returns:
      Sorted offsets (list of int).
    """
    return [0] + [2**k for k in range(max(int(math.log2(max(n - 1, 1))) + 1, 0)) if 2**k < n]


def phi_offsets(n: int) -> list[int]:
    """``{0} ∪ {round(φ^k) : k ≥ 0, round(φ^k) < n}`` — golden-ratio spaced hops.

    Args:
      n: sequence length T.

    Returns:
      Sorted offsets (list of int).
    """
    out, k = {0}, 0
    while round(PHI**k) < n:
        out.add(round(PHI**k))
        k += 1
    return sorted(out)


def make_offsets(
    n: int,
    pattern: str = "pow2",
    n_back: Sequence[int] = (),
    every: int = 0,
    every_count: int = 0,
    bidirectional: bool = False,
) -> tuple[int, ...]:
    """One offset set for every routing pattern of seed 001.

    ``pattern``: "pow2" (spiral), "phi" (round(φ^k)), or "none" (only the diagonal); ``n_back``:
    fixed extra offsets; ``every``/``every_count``: keys with ``j ≡ i (mod every)``, the nearest
    ``every_count`` of them. ``bidirectional`` mirrors the set (encoder use only, never for LM loss).

    Args:
      n: sequence length T.
      pattern: "pow2" | "phi" | "none".
      n_back: extra fixed offsets (those outside [0, n) are dropped).
      every: period of the ``j ≡ i (mod every)`` keys (0: none).
      every_count: how many of those keys.
      bidirectional: add ``−o`` for every offset ``o``.

    Returns:
      Sorted tuple of int offsets ``i − j``.
    """
    base = {"pow2": powers_of_two, "phi": phi_offsets, "none": lambda _: [0]}
    if pattern not in base:
        raise ValueError(f"unknown spiral pattern {pattern!r} (pow2 | phi | none)")
    offs = set(base[pattern](n)) | {int(o) for o in n_back if 0 <= int(o) < n}
    if every > 0:
        offs |= {every * m for m in range(1, every_count + 1) if every * m < n}
    if bidirectional:
        offs |= {-o for o in offs}
    return tuple(sorted(offs))


def spiral_mask(n: int, offsets: Iterable[int] | None = None, n_keys: int | None = None) -> jax.Array:
    """``mask[i, j] = (i + P − j) ∈ offsets`` (and 0 ≤ j < S), ``P = n_keys − n``: the queries are the last
    n of ``n_keys`` positions (default n, P = 0). Causal for offsets ≥ 0.

    Args:
      n: number of queries T.
      offsets: allowed ``i − j`` (default :func:`powers_of_two` of ``n_keys``).
      n_keys: number of keys S ≥ T (default T).

    Returns:
      Bool ``[T, S]`` (query, key).
    """
    s = n if n_keys is None else n_keys
    offsets = powers_of_two(s) if offsets is None else list(offsets)
    diff = (np.arange(n)[:, None] + (s - n)) - np.arange(s)[None, :]
    return jnp.asarray(np.isin(diff, np.asarray(offsets)))


def shift_time(x: jax.Array, offset: int) -> jax.Array:
    """``y[:, i] = x[:, i − offset]`` with zeros where ``i − offset`` is out of range.

    Args:
      x: ``[B, T, ...]`` (axis 1 = time).
      offset: time shift (> 0: ``y`` at i holds the past value ``x`` at i − offset).

    Returns:
      Same shape as ``x``.
    """
    n = x.shape[1]
    if offset == 0:
        return x
    if abs(offset) >= n:
        return jnp.zeros_like(x)
    pad = [(0, 0)] * x.ndim
    if offset > 0:
        pad[1] = (offset, 0)
        return jnp.pad(x, pad)[:, :n]
    pad[1] = (0, -offset)
    return jnp.pad(x, pad)[:, -offset:]


def _valid_keys(
    n: int, n_keys: int, offsets: Sequence[int], key_mask: jax.Array | None, keep_diagonal: bool
) -> jax.Array:
    """Bool ``[B or 1, n, |offsets|]``: key ``P + i − o`` exists (and is allowed by ``key_mask``)."""
    p = n_keys - n
    i = jnp.arange(n) + p
    cols = []
    for o in offsets:
        ok = ((i - o) >= 0) & ((i - o) < n_keys)
        ok = ok[None, :]
        if key_mask is not None and not (keep_diagonal and o == 0):
            ok = ok & shift_time(key_mask, o)[:, p:]
        cols.append(ok)
    return jnp.stack(jnp.broadcast_arrays(*cols), axis=-1)


def _can_have_empty_rows(offsets, key_mask, keep_diagonal) -> bool:
    """False when every query keeps its own position as a key (offset 0, not removed by ``key_mask``)."""
    return not (0 in offsets and (key_mask is None or keep_diagonal))


def _sparse(q, k, v, offsets, key_mask, keep_diagonal):
    scale = q.shape[-1] ** -0.5
    t, p = q.shape[1], k.shape[1] - q.shape[1]
    k_sh = jnp.stack([shift_time(k, o)[:, p:] for o in offsets], axis=2)  # [B, T, O, H, D]
    v_sh = jnp.stack([shift_time(v, o)[:, p:] for o in offsets], axis=2)
    scores = jnp.einsum("bthd,btohd->btho", q, k_sh) * scale
    valid = _valid_keys(t, k.shape[1], offsets, key_mask, keep_diagonal)[:, :, None, :]  # [B, T, 1, O]
    w = masked_softmax(scores, valid, empty_rows=_can_have_empty_rows(offsets, key_mask, keep_diagonal))
    return jnp.einsum("btho,btohd->bthd", w.astype(v.dtype), v_sh)


def _dense(q, k, v, offsets, key_mask, keep_diagonal):
    n, s = q.shape[1], k.shape[1]
    mask = spiral_mask(n, offsets, s)[None, None]  # [1, 1, T, S]
    if key_mask is not None:
        keys = key_mask[:, None, None, :]
        if keep_diagonal:
            keys = keys | jnp.eye(n, s, s - n, dtype=bool)[None, None]
        mask = mask & keys
    return masked_attention(q, k, v, mask, empty_rows=_can_have_empty_rows(offsets, key_mask, keep_diagonal))


def spiral_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    offsets: Sequence[int] | None = None,
    key_mask: jax.Array | None = None,
    impl: str | Impl = Impl.AUTO,
    keep_diagonal: bool = True,
) -> jax.Array:
    """softmax(q·k/√D) over the spiral-allowed keys; shapes ``[B, T, H, D]`` (keys ``[B, S, H, D]``,
    S ≥ T, when the first S − T keys are a cache of earlier positions).

    ``key_mask`` ``[B, S]`` (True = key usable, e.g. not silence, or a filled cache slot) removes keys
    per sequence; the diagonal stays unless ``keep_diagonal=False``. Rows with no usable key return
    zeros, never NaN.

    Args:
      q: ``[B, T, H, D]`` queries (positions ``S − T … S − 1``).
      k: ``[B, S, H, D]`` keys, S ≥ T.
      v: ``[B, S, H, Dv]`` values.
      offsets: allowed ``i − j`` (default :func:`powers_of_two` of S).
      key_mask: optional bool ``[B, S]``.
      impl: "sparse" (O(T·|offsets|)), "dense" (O(T·S) reference) or "auto" (per platform and S:
        dense below a crossover length, :mod:`spiraljax.ops.impl`); an :class:`~spiraljax.ops.impl.Impl`
        or its string.
      keep_diagonal: the key ``j = i`` survives ``key_mask``.

    Returns:
      ``[B, T, H, Dv]``.
    """
    check_prefix_keys(q, k, v, key_mask)
    which = resolve("spiral_attention", impl, length=k.shape[1])
    offsets = tuple(powers_of_two(k.shape[1]) if offsets is None else offsets)
    run = _sparse if which is Impl.SPARSE else _dense
    return run(q, k, v, offsets, key_mask, keep_diagonal)
