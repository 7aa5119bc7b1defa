"""Shifted-key fast weights: the key written at t comes from a short causal convolution over the key
inputs of positions t−K+1 … t, so ``k_{t−1} ⊗ v_t`` can be stored (the fast-weight counterpart of
smeared keys; H3/Based use such short convolutions).

    p̃_t = Σ_{j=0}^{K−1} c_{h,j} p_{t−j},   k̃_t = φ(p̃_t),
    S_t = exp(g_t)·S_{t−1} + k̃_tᵀ v_t,    o_t = q_t S_t

``p`` are the key *inputs* ``[B, T, H, D]`` (before the feature map φ, so a real-valued kernel keeps
φ's positivity: the Hebbian normaliser stays positive), ``taps`` ``c [H, K]`` with ``c[:, 1] = 1`` and
the rest 0 the pure shift ``k̃_t = k_{t−1}``. Positions before the first carried key count as p = 0
(zero padding, as a causal convolution does). The last K−1 key inputs are returned, so a following
window continues the convolution exactly: ``initial_keys [B, K−1, H, D]`` (oldest first).
"""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp

from spiraljax.ops.hebbian import fast_weights
from spiraljax.ops.impl import Impl, resolve

Feature = Callable[[jax.Array], jax.Array]


def _identity(x: jax.Array) -> jax.Array:
    return x


def _initial_keys(p: jax.Array, taps: jax.Array, initial_keys: jax.Array | None) -> jax.Array:
    b, _, h, d = p.shape
    width = taps.shape[-1]
    if initial_keys is None:
        return jnp.zeros((b, width - 1, h, d), jnp.float32)
    chex.assert_shape(initial_keys, (b, width - 1, h, d))
    return initial_keys.astype(jnp.float32)


def causal_key_conv(
    p: jax.Array, taps: jax.Array, initial_keys: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """``p̃_t = Σ_j c_{h,j} p_{t−j}`` over ``[initial_keys; p]`` (zeros before them).

    Args:
      p: key inputs ``[B, T, H, D]``.
      taps: ``c [H, K]``, K ≥ 1; ``c[:, j]`` weighs the input j positions back.
      initial_keys: the K−1 key inputs before ``p`` ``[B, K−1, H, D]`` (oldest first), default zeros.

    Returns:
      ``(p̃ [B, T, H, D] fp32, last K−1 key inputs [B, K−1, H, D] fp32)``.
    """
    chex.assert_rank([p, taps], [4, 2])
    t = p.shape[1]
    width = taps.shape[-1]
    full = jnp.concatenate([_initial_keys(p, taps, initial_keys), p.astype(jnp.float32)], axis=1)
    c = taps.astype(jnp.float32)
    out = sum(c[:, j][:, None] * full[:, width - 1 - j : width - 1 - j + t] for j in range(width))
    return out, full[:, full.shape[1] - (width - 1) :]


def shifted_fast_weights_scan(
    q: jax.Array,
    p: jax.Array,
    v: jax.Array,
    log_decay: jax.Array | float,
    taps: jax.Array,
    feature: Feature = _identity,
    initial_state: jax.Array | None = None,
    initial_keys: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Reference: one ``lax.scan`` step per position carrying the fast weights and the last K−1 key
    inputs: ``buf ← [buf; p_t]``, ``k̃_t = φ(Σ_j c_j buf_{−1−j})``, ``S ← e^{g_t} S + k̃_tᵀ v_t``, ``o_t = q_t S``.

    Args and returns: as :func:`shifted_fast_weights`.
    """
    b, t, h, d = q.shape
    chex.assert_equal_shape([q, p])
    g = jnp.broadcast_to(jnp.asarray(log_decay, jnp.float32), (b, t, h))
    s0 = jnp.zeros((b, h, d, v.shape[-1]), jnp.float32) if initial_state is None else initial_state.astype(jnp.float32)
    buf0 = _initial_keys(p, taps, initial_keys)
    c = taps.astype(jnp.float32)
    width = taps.shape[-1]

    def step(carry, x):
        s, buf = carry
        qt, pt, vt, gt = x
        window = jnp.concatenate([buf, pt[:, None]], axis=1)  # positions t−K+1 … t
        kt = feature(sum(c[:, j][:, None] * window[:, width - 1 - j] for j in range(width)))
        s = jnp.exp(gt)[..., None, None] * s + jnp.einsum("bhd,bhe->bhde", kt, vt)
        return (s, window[:, 1:]), jnp.einsum("bhd,bhde->bhe", qt, s)

    xs = tuple(jnp.swapaxes(a.astype(jnp.float32), 0, 1) for a in (q, p, v, g))
    (final, keys), out = jax.lax.scan(step, (s0, buf0), xs)
    return jnp.swapaxes(out, 0, 1), final, keys


def shifted_fast_weights(
    q: jax.Array,
    p: jax.Array,
    v: jax.Array,
    log_decay: jax.Array | float,
    taps: jax.Array,
    feature: Feature = _identity,
    *,
    initial_state: jax.Array | None = None,
    initial_keys: jax.Array | None = None,
    impl: str | Impl = Impl.CHUNKED,
    chunk: int = 64,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Fast weights written with convolved keys ``k̃_t = φ(Σ_j c_{h,j} p_{t−j})`` (module docstring).

    Args:
      q: queries ``[B, T, H, D]`` (feature map already applied).
      p: key inputs ``[B, T, H, D]`` (before φ).
      v: ``[B, T, H, Dv]``.
      log_decay: g ≤ 0, broadcastable to ``[B, T, H]``.
      taps: ``c [H, K]``.
      feature: φ applied to the convolved keys (elementwise).
      initial_state: ``[B, H, D, Dv]`` (default zeros).
      initial_keys: ``[B, K−1, H, D]`` key inputs before the window (default zeros).
      impl: "scan" (reference), "chunked" (convolution, then :func:`fast_weights` chunked) or "auto".
      chunk: chunk size of the chunked form.

    Returns:
      ``(o [B, T, H, Dv], S_T [B, H, D, Dv], last K−1 key inputs [B, K−1, H, D])`` in fp32.
    """
    which = resolve("shifted_fast_weights", impl, length=q.shape[1], chunk=chunk)
    if which is Impl.SCAN:
        return shifted_fast_weights_scan(q, p, v, log_decay, taps, feature, initial_state, initial_keys)
    conv, keys = causal_key_conv(p, taps, initial_keys)
    o, state = fast_weights(q, feature(conv), v, log_decay, initial_state=initial_state, impl=Impl.CHUNKED, chunk=chunk)
    return o, state, keys
