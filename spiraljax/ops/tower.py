"""TowerMemory as a fixed-size functional state (no Python mutation under jit).

State per sequence: ``content [M, d]`` (what a read returns: the pooled hidden state of a breath
cycle), ``key [M, k]`` (its address), ``charge [M, 2]`` (emotional pressure, temporal urgency at
creation), ``strength [M]`` and ``valid [M]``.

Resonance of painting m with a read at charge ``c`` and query ``q``::

    charge_sim_m = 1 − (|ep_m − ep| + |tu_m − tu|) / 2                       ∈ [0, 1]
    sim_m        = ½ (charge_sim_m + cos(q, key_m))                           ∈ [−½, 1]

(``sim_m = charge_sim_m`` when no query is given). Within one sequence the charge is constant, so
the charge term ties every painting and only the content term tells paintings apart. A read returns
the most resonant valid painting if ``sim > threshold``. The selection is a hard argmax in the
forward pass; its gradient is the straight-through softmax ``p = softmax(sim / τ)``: the read
weights are ``onehot(argmax) + p − stop_gradient(p)``, exactly one-hot in value, while the query
and the keys receive the gradient of a soft read.

A write decays every strength by ``decay`` and puts the new painting (strength 1) into a free slot,
else over the weakest one (not merely the oldest: a read re-strengthens its painting).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

Tower = dict[str, jax.Array]
READ_TEMPERATURE = 0.1  # τ of the straight-through softmax (gradient only)
_EMPTY = -1e9  # finite stand-in for −inf in the softmax (an empty tower must not give NaN)


def tower_init(batch: int, capacity: int, dim: int, key_dim: int | None = None) -> Tower:
    """An empty tower: ``capacity`` slots per sequence, contents of size ``dim``, keys of ``key_dim``.

    Args:
      batch: B.
      capacity: M slots.
      dim: d, content size.
      key_dim: k, address size (default ``dim``).

    Returns:
      ``{content [B, M, d], key [B, M, k], charge [B, M, 2], strength [B, M], valid [B, M] bool}``, all zero.
    """
    return {
        "content": jnp.zeros((batch, capacity, dim), jnp.float32),
        "key": jnp.zeros((batch, capacity, key_dim or dim), jnp.float32),
        "charge": jnp.zeros((batch, capacity, 2), jnp.float32),
        "strength": jnp.zeros((batch, capacity), jnp.float32),
        "valid": jnp.zeros((batch, capacity), bool),
    }


def charge_resonance(tower: Tower, charge: jax.Array) -> jax.Array:
    """``1 − (|Δep| + |Δtu|)/2`` per slot.

    Args:
      tower: state of :func:`tower_init`.
      charge: ``[B, 2]`` (ep, tu) of the read.

    Returns:
      ``[B, M]``.
    """
    chex.assert_shape(charge, (tower["charge"].shape[0], 2))
    return 1.0 - jnp.sum(jnp.abs(tower["charge"] - charge[:, None, :]), axis=-1) / 2.0


def cosine(query: jax.Array, keys: jax.Array, eps: float = 1e-6) -> jax.Array:
    """``cos(q_b, k_bm)`` for ``query [B, k]`` and ``keys [B, M, k]`` (0 for a zero vector; the squared
    norms keep the gradient finite at an empty slot's zero key, where ``d|k|/dk`` is 0/0):
    ``q·k / sqrt(max(|q|²|k|², ε²))``.

    Args:
      query: ``[B, k]``.
      keys: ``[B, M, k]``.
      eps: norm floor.

    Returns:
      ``[B, M]``.
    """
    chex.assert_rank([query, keys], [2, 3])
    chex.assert_shape(query, (keys.shape[0], keys.shape[2]))
    dot = jnp.einsum("bk,bmk->bm", query, keys)
    sq = jnp.sum(query * query, axis=-1)[:, None] * jnp.sum(keys * keys, axis=-1)
    return dot * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def resonance(tower: Tower, charge: jax.Array, query: jax.Array | None = None) -> jax.Array:
    """``sim = ½ (charge_sim + cos(q, key))`` (or ``charge_sim`` without a query) as in the module
    docstring; ``−inf`` for empty slots.

    Args:
      tower: state of :func:`tower_init`.
      charge: ``[B, 2]``.
      query: optional ``[B, k]``.

    Returns:
      ``[B, M]``.
    """
    sim = charge_resonance(tower, charge)
    if query is not None:
        sim = 0.5 * (sim + cosine(query, tower["key"]))
    return jnp.where(tower["valid"], sim, -jnp.inf)


def tower_read(
    tower: Tower,
    charge: jax.Array,
    threshold: float = 0.3,
    query: jax.Array | None = None,
    active: jax.Array | None = None,
    awaken: float = 0.1,
) -> tuple[Tower, jax.Array, jax.Array, jax.Array]:
    """Most resonant painting per sequence → ``(tower', content [B, d], found [B], slot [B])``.

    ``content`` is zero and ``slot`` is −1 where nothing is found (or ``active`` is False); a hit
    gains ``awaken`` strength (capped at 1).

    Args:
      tower: state of :func:`tower_init` (B sequences, M slots).
      charge: ``[B, 2]`` (ep, tu) of the read.
      threshold: minimum resonance of a hit.
      query: optional ``[B, k]`` content address.
      active: optional bool ``[B]``: which sequences read.
      awaken: strength gained by a hit.

    Returns:
      ``(tower', content [B, d], found [B] bool, slot [B] int)``.
    """
    b = tower["content"].shape[0]
    chex.assert_shape(charge, (b, 2))
    if query is not None:
        chex.assert_shape(query, (b, tower["key"].shape[-1]))
    if active is not None:
        chex.assert_shape(active, (b,))
    sim = resonance(tower, charge, query)
    best = jnp.argmax(sim, axis=-1)
    found = jnp.take_along_axis(sim, best[:, None], axis=-1)[:, 0] > threshold
    if active is not None:
        found = found & active
    m = tower["strength"].shape[-1]
    hard = jax.nn.one_hot(best, m)
    soft = jax.nn.softmax(jnp.where(tower["valid"], sim, _EMPTY) / READ_TEMPERATURE, axis=-1)
    weights = hard + (soft - jax.lax.stop_gradient(soft))  # value: one-hot; gradient: soft read
    content = jnp.einsum("bm,bmd->bd", weights, tower["content"])
    bump = hard * (awaken * found[:, None])
    tower = {**tower, "strength": jnp.minimum(tower["strength"] + bump, 1.0)}
    return tower, content * found[:, None], found, jnp.where(found, best, -1)


def tower_write(
    tower: Tower,
    content: jax.Array,
    charge: jax.Array,
    decay: float = 0.95,
    active: jax.Array | None = None,
    key: jax.Array | None = None,
) -> Tower:
    """Decay all strengths, then store ``content [B, d]`` (address ``key [B, k]``, default the content
    itself) in a free slot or over the weakest painting: ``strength ← decay·strength``, the chosen
    slot ← (content, key, charge, strength 1, valid).

    Args:
      tower: state of :func:`tower_init` (B sequences, M slots).
      content: ``[B, d]``.
      charge: ``[B, 2]``.
      decay: strength decay per write.
      active: optional bool ``[B]``: which sequences write.
      key: optional ``[B, k]`` address (default ``content``).

    Returns:
      The new tower (same shapes).
    """
    b, _, d = tower["content"].shape
    chex.assert_shape(content, (b, d))
    chex.assert_shape(charge, (b, 2))
    if key is not None:
        chex.assert_shape(key, (b, tower["key"].shape[-1]))
    if active is not None:
        chex.assert_shape(active, (b,))
    m = tower["strength"].shape[-1]
    key = content if key is None else key
    score = jnp.where(tower["valid"], tower["strength"], -1.0)  # free slots first, then the weakest
    slot = jax.nn.one_hot(jnp.argmin(score, axis=-1), m, dtype=bool)
    if active is not None:
        slot = slot & active[:, None]
    return {
        "content": jnp.where(slot[..., None], content[:, None, :], tower["content"]),
        "key": jnp.where(slot[..., None], key[:, None, :], tower["key"]),
        "charge": jnp.where(slot[..., None], charge[:, None, :], tower["charge"]),
        "strength": jnp.where(slot, 1.0, tower["strength"] * decay),
        "valid": tower["valid"] | slot,
    }
