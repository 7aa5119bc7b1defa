"""Sampling from the memory: repeated retrieval with a sliding context window."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from spiraljax.holographic.read import best_scores
from spiraljax.holographic.store import State


def generate(state: State, prompt: jax.Array, n: int, key: jax.Array, capacity: int, temperature: float = 0.25):
    """Sample ``n`` tokens after ``prompt [B, ctx]`` by repeated retrieval → ``[B, ctx + n]``."""
    ctx_len = prompt.shape[1]

    def step(carry, k):
        window = carry
        best = best_scores(state, window, capacity)
        tok = jax.random.categorical(k, best / temperature, axis=-1).astype(window.dtype)
        return jnp.concatenate([window[:, 1:], tok[:, None]], axis=1), tok

    _, toks = jax.lax.scan(step, prompt[:, -ctx_len:], jax.random.split(key, n))
    return jnp.concatenate([prompt, toks.T], axis=1)
