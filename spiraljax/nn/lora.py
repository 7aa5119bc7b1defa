"""Low-rank adapters: ``y = x W + (α/r) · x A B`` with B initialised to zero (so training starts at the base)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class LoRADense(nn.Module):
    """Dense (no bias) with an optional rank-r adapter; params ``kernel``, ``lora_a``, ``lora_b``."""

    features: int
    rank: int = 0
    alpha: float = 16.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d_in = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (d_in, self.features))
        y = x @ kernel.astype(self.dtype)
        if self.rank > 0:
            a = self.param("lora_a", nn.initializers.normal(1.0 / self.rank), (d_in, self.rank))
            b = self.param("lora_b", nn.initializers.zeros, (self.rank, self.features))
            y = y + (self.alpha / self.rank) * ((x @ a.astype(self.dtype)) @ b.astype(self.dtype))
        return y


def _is_lora(node) -> bool:
    return isinstance(node, dict) and {"kernel", "lora_a", "lora_b"} <= set(node)


def _map_lora(params, fn):
    if _is_lora(params):
        return fn(params)
    if isinstance(params, dict):
        return {k: _map_lora(v, fn) for k, v in params.items()}
    return params


def merge_lora(params, scale: float):
    """Fold every adapter into its kernel: ``W ← W + scale·A B``, ``B ← 0``. Returns (merged, adapters)."""
    adapters = {}

    def fold(node):
        delta = scale * node["lora_a"] @ node["lora_b"]
        adapters[id(node)] = node["lora_b"]
        return {**node, "kernel": node["kernel"] + delta, "lora_b": jnp.zeros_like(node["lora_b"])}

    merged = _map_lora(params, fold)
    saved = _map_lora(params, lambda node: {"lora_b": node["lora_b"]})
    return merged, saved


def unmerge_lora(merged, adapters, scale: float):
    """Inverse of :func:`merge_lora`: ``W ← W − scale·A B_saved``, ``B ← B_saved``."""
    def walk(m, a):
        if _is_lora(m):
            b = a["lora_b"]
            return {**m, "kernel": m["kernel"] - scale * m["lora_a"] @ b, "lora_b": b}
        if isinstance(m, dict):
            return {k: walk(v, a[k]) if isinstance(a, dict) and k in a else v for k, v in m.items()}
        return m

    return walk(merged, adapters)
