"""Low-rank adapters: ``y = x W (+ b) + (α/r) · x A B`` with B initialised to zero (so training starts at the base).

:class:`LoRADense` is the one linear layer of the shared attention / MLP stack: with ``rank = 0`` it
is ``nn.Dense`` / ``nn.DenseGeneral`` (no adapter) with the same parameter names, shapes and initial
values, so a model gains adapters by a config field without changing its base parameters.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core.scope import LazyRng


def _tuple(x: int | Sequence[int]) -> tuple[int, ...]:
    return (x,) if isinstance(x, int) else tuple(x)


class LoRADense(nn.Module):
    """``y = x W + b + (α/r) · x A B`` contracting the input ``axis`` (or axes) of ``x``.

    Params ``kernel`` W ``[in…, out…]`` (lecun-normal drawn as the flat ``[∏in, ∏out]`` matrix and
    reshaped, exactly as ``nn.DenseGeneral`` draws it), ``bias`` b ``[out…]`` if ``use_bias``, and with
    ``rank = r > 0`` the adapter ``lora_a`` A ``[∏in, r]`` ~ N(0, 1/r²), ``lora_b`` B ``[r, ∏out]`` = 0.
    ``draws_from``: the rng path whose keys draw the initial values instead of the layer's own (see
    :class:`spiraljax.nn.layers.MLP`; None: the layer's own, as ``nn.Dense`` draws them).
    """

    features: int | Sequence[int]
    rank: int = 0
    alpha: float = 16.0
    axis: int | Sequence[int] = -1
    use_bias: bool = False
    dtype: Any = jnp.float32
    draws_from: LazyRng | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out_shape = _tuple(self.features)
        axes = tuple(sorted(a % x.ndim for a in _tuple(self.axis)))  # as nn.DenseGeneral
        in_shape = tuple(x.shape[a] for a in axes)
        n_in, n_out = math.prod(in_shape), math.prod(out_shape)

        def init(key, shape, dtype=jnp.float32):
            return nn.initializers.lecun_normal()(key, (n_in, n_out), dtype).reshape(shape)

        kernel = self._param("kernel", init, in_shape + out_shape)
        bias = self._param("bias", nn.initializers.zeros, out_shape) if self.use_bias else None
        x = jnp.moveaxis(x, axes, tuple(range(x.ndim - len(axes), x.ndim))).astype(self.dtype)
        batch = x.shape[: x.ndim - len(axes)]
        y = as_matrix_product(x, kernel.astype(self.dtype), len(axes), out_shape)
        if bias is not None:
            y = y + bias.astype(self.dtype)
        if self.rank > 0:
            a = self._param("lora_a", nn.initializers.normal(1.0 / self.rank), (n_in, self.rank))
            b = self._param("lora_b", nn.initializers.zeros, (self.rank, n_out))
            delta = (x.reshape(-1, n_in) @ a.astype(self.dtype)) @ b.astype(self.dtype)
            y = y + (self.alpha / self.rank) * delta.reshape(batch + out_shape)
        return y

    def _param(self, name: str, init: Callable, shape: tuple[int, ...]) -> jax.Array:
        """``self.param``; with ``draws_from`` the n-th parameter draws from ``fold(draws_from, n)``,
        the key Flax gives the n-th parameter of a layer at that path."""
        if self.draws_from is None:
            return self.param(name, init, shape)

        def init_from_path(_own_key, shape):
            return init(LazyRng.create(self.draws_from, self.scope.rng_counters["params"]).as_jax_rng(), shape)

        return self.param(name, init_from_path, shape)


def as_matrix_product(x: jax.Array, kernel: jax.Array, n_axes: int, out_shape: tuple[int, ...]) -> jax.Array:
    """``y[b…, o…] = Σ_{i…} x[b…, i…] W[i…, o…]`` over the last ``n_axes`` axes of ``x``, computed as one
    2-D product ``[N, in] × [in, out]`` with every leading position a row (``W`` ``[in…, out…]`` or its
    flat ``[∏in, ∏out]`` form; ``out_shape`` the output axes ``o…``).

    The fast path of :func:`contract_reference` (same values and gradients up to float rounding,
    tested): contracting ``[B, T, in]`` with ``dot_general`` makes the weight gradient
    ``Σ_{b,t} x_btᵀ g_bt`` a contraction over two axes, for which XLA's CPU backend materialises
    transposed copies of the activations; as one 2-D product it needs none (one SwiGLU MLP layer
    fwd+bwd at [32, 128, 128]: 22 → 11 ms, docs/benchmarks.md).
    """
    batch = x.shape[: x.ndim - n_axes]
    n_in = math.prod(x.shape[x.ndim - n_axes :])
    y = x.reshape(-1, n_in) @ kernel.reshape(n_in, math.prod(out_shape))
    return y.reshape(batch + tuple(out_shape))


def contract_reference(x: jax.Array, kernel: jax.Array, n_axes: int) -> jax.Array:
    """``y[b…, o…] = Σ_{i…} x[b…, i…] W[i…, o…]`` over the last ``n_axes`` axes of ``x`` as one
    ``dot_general`` with ``W`` ``[in…, out…]`` (how :class:`LoRADense` contracted before
    :func:`as_matrix_product`)."""
    contract = tuple(range(x.ndim - n_axes, x.ndim))
    return jax.lax.dot_general(x, kernel, ((contract, tuple(range(n_axes))), ((), ())))


def _is_lora(node) -> bool:
    return isinstance(node, dict) and {"kernel", "lora_a", "lora_b"} <= set(node)


def _map_lora(params, fn):
    if _is_lora(params):
        return fn(params)
    if isinstance(params, dict):
        return {k: _map_lora(v, fn) for k, v in params.items()}
    return params


def _delta(node, b: jax.Array, scale: float) -> jax.Array:
    """``scale · A B`` in the kernel's layout."""
    return (scale * node["lora_a"] @ b).reshape(node["kernel"].shape)


def merge_lora(params, scale: float):
    """Fold every adapter into its kernel: ``W ← W + scale·A B``, ``B ← 0``.

    ``scale`` is ``α / r``. Returns ``(merged, saved)``: the merged tree (same outputs, plain
    kernels) and ``saved = {…: {"lora_b": B}}`` per adapter, which :func:`unmerge_lora` needs to undo it.
    """

    def fold(node):
        return {
            **node,
            "kernel": node["kernel"] + _delta(node, node["lora_b"], scale),
            "lora_b": jnp.zeros_like(node["lora_b"]),
        }

    merged = _map_lora(params, fold)
    saved = _map_lora(params, lambda node: {"lora_b": node["lora_b"]})
    return merged, saved


def unmerge_lora(merged, saved, scale: float):
    """Inverse of :func:`merge_lora`: ``W ← W − scale·A B_saved``, ``B ← B_saved``."""

    def walk(m, s):
        if _is_lora(m):
            b = s["lora_b"]
            return {**m, "kernel": m["kernel"] - _delta(m, b, scale), "lora_b": b}
        if isinstance(m, dict):
            return {k: walk(v, s[k]) if isinstance(s, dict) and k in s else v for k, v in m.items()}
        return m

    return walk(merged, saved)
