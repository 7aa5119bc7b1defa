"""The breath clock: a pure function of an integer counter (a step or a token position).

Phases inhale 4, hold 2, exhale 4, pause 2 (durations in counter units) with attention weights
1.0, 0.5, 0.25, 0.0. ``phase(c) = searchsorted(cumsum(durations), c mod Σ durations, 'right')``.
Nothing here reads the wall clock (the original did, which made it non-reproducible).

Options of the one rhythm mechanism: phase weights (block gating), rhythmic attention (attention
open only in chosen phases), breathing recurrence (update every k), contemplative dropout (rate per
phase) and rhythmic loss weights.
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp

PHASES = ("inhale", "hold", "exhale", "pause")
INHALE, HOLD, EXHALE, PAUSE = range(4)
DEFAULT_DURATIONS = (4, 2, 4, 2)
DEFAULT_WEIGHTS = (1.0, 0.5, 0.25, 0.0)


def phase(counter: jax.Array | int, durations: Sequence[int] = DEFAULT_DURATIONS) -> jax.Array:
    """Phase index (0 inhale, 1 hold, 2 exhale, 3 pause):
    ``searchsorted(cumsum(durations), c mod Σ durations, 'right')``.

    Args:
      counter: integer step or position (scalar or ``[...]``).
      durations: phase lengths (inhale, hold, exhale, pause).

    Returns:
      int32, same shape as ``counter``.
    """
    bounds = jnp.cumsum(jnp.asarray(durations, jnp.int32))
    c = jnp.mod(jnp.asarray(counter, jnp.int32), bounds[-1])
    return jnp.searchsorted(bounds, c, side="right").astype(jnp.int32)


def phase_weight(
    counter: jax.Array | int, durations: Sequence[int] = DEFAULT_DURATIONS, weights: Sequence[float] = DEFAULT_WEIGHTS
) -> jax.Array:
    """Attention/block weight of the phase at ``counter``: ``weights[phase(counter)]``.

    Args:
      counter: integer step or position (scalar or ``[...]``).
      durations: phase lengths (inhale, hold, exhale, pause).
      weights: one weight per phase.

    Returns:
      float32, same shape as ``counter``.
    """
    return jnp.asarray(weights, jnp.float32)[phase(counter, durations)]


def sequence_phases(
    length: int, offset: jax.Array | int = 0, durations: Sequence[int] = DEFAULT_DURATIONS
) -> jax.Array:
    """Phase of every position ``t`` of a sequence: ``phase(offset + t)``.

    Args:
      length: T.
      offset: counter of position 0 (scalar).
      durations: phase lengths.

    Returns:
      int32 ``[T]``.
    """
    return phase(jnp.arange(length, dtype=jnp.int32) + jnp.asarray(offset, jnp.int32), durations)


def attention_open(phases: jax.Array, open_phases: Sequence[int] = (INHALE, HOLD, EXHALE)) -> jax.Array:
    """Rhythmic attention mask: ``phases ∈ open_phases``.

    Args:
      phases: ``[...]`` phase indices.
      open_phases: phases in which attention is applied.

    Returns:
      Bool, same shape as ``phases``.
    """
    return jnp.isin(phases, jnp.asarray(open_phases, jnp.int32))


def recurrence_tick(counter: jax.Array | int, every: int) -> jax.Array:
    """Breathing recurrence: True on the counters where a recurrent state updates (every k-th).

    The Spiralformer uses it for TowerMemory writes: cycle ``c`` is written iff
    ``recurrence_tick(c, memory.write_every)``.

    Args:
      counter: integer counter (scalar or ``[...]``).
      every: k.

    Returns:
      Bool ``counter mod k == 0``, same shape as ``counter``.
    """
    return jnp.mod(jnp.asarray(counter, jnp.int32), every) == 0


def dropout_rate(phases: jax.Array, rates: Sequence[float] = (0.0, 0.0, 0.1, 0.0)) -> jax.Array:
    """Contemplative dropout: the dropout rate follows the breath phase, ``rates[phases]``.

    Args:
      phases: ``[...]`` phase indices.
      rates: one rate per phase.

    Returns:
      float32, same shape as ``phases``.
    """
    return jnp.asarray(rates, jnp.float32)[phases]


def phase_dropout(x: jax.Array, rates: jax.Array, key: jax.Array) -> jax.Array:
    """Inverted dropout with a per-position rate p: ``x / (1 − p)`` with probability 1 − p, else 0.

    Args:
      x: ``[..., d]`` activations.
      rates: ``[...]`` (broadcastable to ``x.shape[:-1]``), broadcast over the feature axis.
      key: PRNG key.

    Returns:
      Same shape and dtype as ``x``.
    """
    chex.assert_is_broadcastable(rates.shape, x.shape[:-1])
    keep = 1.0 - rates[..., None]
    mask = jax.random.uniform(key, x.shape) < keep
    return jnp.where(mask, x / jnp.maximum(keep, 1e-6), 0.0).astype(x.dtype)


def target_weight_table(vocab_size: int, silence_ids: jax.Array, active_boost: float = 1.0) -> jax.Array:
    """Loss multiplier per target id: 1 for silence ids, ``active_boost`` for every other id.

    Args:
      vocab_size: V.
      silence_ids: ``[S]`` ids of the silence glyphs.
      active_boost: multiplier of every other id.

    Returns:
      float32 ``[V]``.
    """
    silent = jnp.zeros((vocab_size,), bool).at[jnp.asarray(silence_ids, jnp.int32)].set(True)
    return jnp.where(silent, 1.0, jnp.float32(active_boost))


def rhythmic_token_weights(
    targets: jax.Array, weights_per_position: jax.Array, silence_ids: jax.Array | None = None, active_boost: float = 1.0
) -> jax.Array:
    """Loss weight per target (the rhythmic loss): the breath weight of its position (pause → 0), and targets
    that are not silence up-weighted by ``active_boost`` (counters silence-majority collapse):
    ``w_t = breath_w_t · (active_boost if targets_t ∉ silence else 1)``.

    The trainer normalises by the weight sum: ``L = Σ w_t CE_t / Σ w_t``. A model that sees only the
    inputs hands the trainer the two factors (``aux["token_weights"]`` = breath weights and
    ``aux["target_weights"]`` = :func:`target_weight_table`); the trainer's product equals this.

    Args:
      targets: ``[B, T]`` target ids.
      weights_per_position: breath weights, broadcastable to ``[B, T]`` (e.g. ``[T]``).
      silence_ids: optional ``[S]`` silence ids.
      active_boost: multiplier of non-silence targets.

    Returns:
      float32 ``[B, T]``.
    """
    w = jnp.broadcast_to(weights_per_position, targets.shape).astype(jnp.float32)
    if silence_ids is not None and active_boost != 1.0:
        active = ~jnp.isin(targets, silence_ids)
        w = w * jnp.where(active, active_boost, 1.0)
    return w
