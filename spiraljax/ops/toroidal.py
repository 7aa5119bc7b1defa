"""Toroidal attention: 16 phase satellites, kernel (1 + cos(θ_i − θ_j))/2, φ-weighted master.

Satellite k gives position i the phase θ_{k,i} = 2πk/16 + φ + ω_k·i with ω_k = φ^(k mod 4)·base.
Because (1 + cos(a − b))/2 = (1 + cos a cos b + sin a sin b)/2 is rank 3 in (1, cos θ, sin θ),
causal attention over n positions needs only running sums — O(n):

    out_k(i) = [S1 + cos θ_i·Sc + sin θ_i·Ss](i) / [N1 + cos θ_i·Nc + sin θ_i·Ns](i),
    S1 = Σ_{j≤i} v_j,  Sc = Σ_{j≤i} cos θ_j v_j,  Ss = Σ_{j≤i} sin θ_j v_j  (N: same with v = 1).

The master output is Σ_k a_k out_k with a_k ∝ φ^−(k mod 4).

``toroidal_attention`` is a standalone sequence op (benchmarked in ``benchmarks/holographic.py``): the
holographic memory has no sequence to attend over (a context is a few tokens). What the memory shares
with it is the phase kernel ``phase_kernel`` = (1 + cos Δ)/2, applied there to the angle Δ between
position-wise multivectors of a query and a stored context (``spiraljax/holographic/read.py``).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from spiraljax.ops.constants import PHI

N_SATELLITES = 16


def satellite_phases(
    n: int, n_satellites: int = N_SATELLITES, base: float = 0.1, offsets: jax.Array | None = None
) -> jax.Array:
    """Phases θ_{k,i} = 2πk/K + φ + φ^(k mod 4)·base·i (+ optional per-satellite offsets).

    Args:
      n: sequence length.
      n_satellites: K.
      base: base angular frequency.
      offsets: optional ``[K]`` phase offsets.

    Returns:
      ``[K, n]`` float32.
    """
    k = jnp.arange(n_satellites, dtype=jnp.float32)
    theta0 = 2 * jnp.pi * k / n_satellites + PHI
    if offsets is not None:
        theta0 = theta0 + offsets
    freq = PHI ** jnp.mod(k, 4) * base
    return theta0[:, None] + freq[:, None] * jnp.arange(n, dtype=jnp.float32)[None, :]


def phase_kernel(cos_delta: jax.Array, power: float = 1.0) -> jax.Array:
    """((1 + cos Δ)/2)^power = cos^(2·power)(Δ/2): 1 at Δ = 0, 0 at Δ = π; ``power`` > 1 sharpens it.

    Args:
      cos_delta: ``[...]`` cos Δ.
      power: exponent.

    Returns:
      ``[...]`` in [0, 1].
    """
    return ((1.0 + cos_delta) / 2.0) ** power


def master_weights(n_satellites: int = N_SATELLITES) -> jax.Array:
    """``a_k = φ^−(k mod 4) / Σ_k φ^−(k mod 4)``.

    Args:
      n_satellites: K.

    Returns:
      ``[K]`` weights summing to 1.
    """
    w = PHI ** -jnp.mod(jnp.arange(n_satellites, dtype=jnp.float32), 4)
    return w / jnp.sum(w)


def _check_shapes(v: jax.Array, theta: jax.Array) -> None:
    """``v [n, d]`` and ``theta [K, n]`` with the same n (static checks, free under jit)."""
    chex.assert_rank([v, theta], 2)
    chex.assert_axis_dimension(theta, 1, v.shape[0])


def toroidal_attention(v: jax.Array, theta: jax.Array, causal: bool = True) -> jax.Array:
    """O(n) via running sums (module docstring): ``Σ_k a_k Σ_{j≤i} w_kij v_j / Σ_{j≤i} w_kij`` with
    ``w_kij = (1 + cos(θ_ki − θ_kj))/2``.

    Args:
      v: ``[n, d]`` values.
      theta: ``[K, n]`` satellite phases.
      causal: sum over j ≤ i (else over all j).

    Returns:
      ``[n, d]`` master output.
    """
    _check_shapes(v, theta)
    c, s = jnp.cos(theta), jnp.sin(theta)  # [K, n]
    agg = (
        (lambda x: jnp.cumsum(x, axis=1))
        if causal
        else (lambda x: jnp.broadcast_to(jnp.sum(x, 1, keepdims=True), x.shape))
    )
    s1 = agg(jnp.broadcast_to(v, (theta.shape[0], *v.shape)))  # [K, n, d]
    sc, ss = agg(c[..., None] * v), agg(s[..., None] * v)
    n1 = agg(jnp.ones_like(c))
    nc, ns = agg(c), agg(s)
    num = s1 + c[..., None] * sc + s[..., None] * ss
    den = n1 + c * nc + s * ns
    out = num / jnp.maximum(den, 1e-9)[..., None]
    return jnp.einsum("k,knd->nd", master_weights(theta.shape[0]), out)


def toroidal_attention_reference(v: jax.Array, theta: jax.Array, causal: bool = True) -> jax.Array:
    """O(n²) reference: build every weight (1 + cos(θ_i − θ_j))/2 explicitly.

    Args:
      v, theta, causal: as :func:`toroidal_attention`.

    Returns:
      ``[n, d]`` master output, as :func:`toroidal_attention`.
    """
    _check_shapes(v, theta)
    w = phase_kernel(jnp.cos(theta[:, :, None] - theta[:, None, :]))  # [K, n, n]
    if causal:
        w = w * jnp.tril(jnp.ones(w.shape[1:]))
    out = jnp.einsum("kij,jd->kid", w, v) / jnp.maximum(jnp.sum(w, -1), 1e-9 / 2)[..., None]
    return jnp.einsum("k,knd->nd", master_weights(theta.shape[0]), out)
