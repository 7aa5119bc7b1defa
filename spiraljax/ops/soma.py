"""Soma: conditions ``[latency, voltage, temperature, error_rate, bandwidth]`` (each in [0, 1]) → FieldCharge."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

RESONANCES = ("balanced", "urgent", "intense", "spacious")
# conditions when a caller gives none: a calm field (low latency, mid voltage and temperature, few errors,
# high bandwidth), which field_charge reads as "balanced"
DEFAULT_CONDITIONS = (0.1, 0.5, 0.5, 0.05, 0.9)


def field_charge(conditions: jax.Array) -> jax.Array:
    """``[..., 2]`` = (emotional_pressure, temporal_urgency):

    tu = clip(0.7·latency + 0.3·(1 − bandwidth), 0, 1)
    ep = clip(0.5·error + 0.25·(1 − 2|voltage − 0.5|) + 0.25·(2|temperature − 0.5|), 0, 1)

    Args:
      conditions: ``[..., 5]`` = (latency, voltage, temperature, error_rate, bandwidth).

    Returns:
      ``[..., 2]`` = (ep, tu).
    """
    chex.assert_axis_dimension(conditions, -1, 5)
    lat, volt, temp, err, bw = (conditions[..., i] for i in range(5))
    tu = jnp.clip(0.7 * lat + 0.3 * (1 - bw), 0, 1)
    ep = jnp.clip(0.5 * err + 0.25 * (1 - 2 * jnp.abs(volt - 0.5)) + 0.25 * (2 * jnp.abs(temp - 0.5)), 0, 1)
    return jnp.stack([ep, tu], axis=-1)


def resonance_label(charge: jax.Array) -> jax.Array:
    """Index into RESONANCES: urgent if tu > 0.8, intense if ep > 0.8, spacious if both < 0.2, else balanced.

    Args:
      charge: ``[..., 2]`` = (ep, tu) from :func:`field_charge`.

    Returns:
      ``[...]`` int labels.
    """
    chex.assert_axis_dimension(charge, -1, 2)
    ep, tu = charge[..., 0], charge[..., 1]
    return jnp.where(tu > 0.8, 1, jnp.where(ep > 0.8, 2, jnp.where((ep < 0.2) & (tu < 0.2), 3, 0)))
