"""TowerMemory as a fixed-size functional state (no Python mutation under jit).

State per sequence: ``content [M, d]``, ``charge [M, 2]`` (emotional pressure, temporal urgency at
creation), ``strength [M]`` and ``valid [M]``. Resonance of painting m with charge c:
``sim_m = 1 − (|Δep| + |Δtu|) / 2``; a read returns the most resonant valid painting if
``sim > threshold``. A write decays every strength by ``decay`` and puts the new painting (strength 1)
into a free slot, else over the weakest one (not merely the oldest: reads re-strengthen).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Tower = dict[str, jax.Array]


def tower_init(batch: int, capacity: int, dim: int) -> Tower:
    return {"content": jnp.zeros((batch, capacity, dim), jnp.float32),
            "charge": jnp.zeros((batch, capacity, 2), jnp.float32),
            "strength": jnp.zeros((batch, capacity), jnp.float32),
            "valid": jnp.zeros((batch, capacity), bool)}


def resonance(tower: Tower, charge: jax.Array) -> jax.Array:
    """``sim [B, M] = 1 − (|Δep| + |Δtu|)/2`` (−inf for empty slots)."""
    sim = 1.0 - jnp.sum(jnp.abs(tower["charge"] - charge[:, None, :]), axis=-1) / 2.0
    return jnp.where(tower["valid"], sim, -jnp.inf)


def tower_read(tower: Tower, charge: jax.Array, threshold: float = 0.3, active: jax.Array | None = None,
               awaken: float = 0.1) -> tuple[Tower, jax.Array, jax.Array]:
    """Best painting per sequence → ``(tower', content [B, d], found [B])``; a hit gains ``awaken`` strength."""
    sim = resonance(tower, charge)
    best = jnp.argmax(sim, axis=-1)
    found = jnp.take_along_axis(sim, best[:, None], axis=-1)[:, 0] > threshold
    if active is not None:
        found = found & active
    content = jnp.take_along_axis(tower["content"], best[:, None, None], axis=1)[:, 0]
    bump = jax.nn.one_hot(best, tower["strength"].shape[-1]) * (awaken * found[:, None])
    tower = {**tower, "strength": jnp.minimum(tower["strength"] + bump, 1.0)}
    return tower, content * found[:, None], found


def tower_write(tower: Tower, content: jax.Array, charge: jax.Array, decay: float = 0.95,
                active: jax.Array | None = None) -> Tower:
    """Decay all strengths, then store ``content [B, d]`` in a free slot or over the weakest painting."""
    m = tower["strength"].shape[-1]
    score = jnp.where(tower["valid"], tower["strength"], -1.0)  # free slots first, then the weakest
    slot = jax.nn.one_hot(jnp.argmin(score, axis=-1), m, dtype=bool)
    if active is not None:
        slot = slot & active[:, None]
    return {"content": jnp.where(slot[..., None], content[:, None, :], tower["content"]),
            "charge": jnp.where(slot[..., None], charge[:, None, :], tower["charge"]),
            "strength": jnp.where(slot, 1.0, tower["strength"] * decay),
            "valid": tower["valid"] | slot}
