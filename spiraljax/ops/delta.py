"""Delta-rule fast weights with decay (Gated DeltaNet) — a recurrent reference and a chunked fast path.

Layout as :mod:`spiraljax.ops.hebbian`: row vectors, ``S ∈ R^{Dk×Dv}`` read by ``o_t = q_t S_t``
(SPEC §6 writes the transpose, ``S ∈ R^{dv×dk}``, ``o = S q``). With ``λ_t = exp(g_t)``:

    S_t = λ_t (I − β_t k_tᵀ k_t) S_{t−1} + β_t k_tᵀ v_t
        = λ_t S_{t−1} + β_t k_tᵀ (v_t − λ_t k_t S_{t−1})

(the decay multiplies S_{t−1} before the delta correction, as Gated DeltaNet and SPEC §6 do, so one
step is a contraction for ‖k_t‖ = 1, β_t ∈ (0, 1), λ_t ≤ 1). ``q, k`` are ``[B, T, H, Dk]`` (the
caller L2-normalises them), ``v`` ``[B, T, H, Dv]``, ``beta`` ``[B, T, H]``, ``log_decay`` g ≤ 0
broadcastable to ``[B, T, H]``; the state ``[B, H, Dk, Dv]`` is fp32. No normaliser: the state stays
bounded by the contraction and the written values.

Chunked form (chunk C; rows of the chunk K [C, Dk], V [C, Dv], Q; L_i = Σ_{m≤i} g_m in the chunk;
D_ij = e^{L_i − L_j} for i ≥ j, else 0). The pseudo-values u_t = β_t (v_t − λ_t k_t S_{t−1}) satisfy

    (I + tril(diag(β) (K Kᵀ ⊙ D), −1)) U = diag(β) (V − (K ⊙ e^{L}) S_0)

so with T = (I + tril(diag(β)(K Kᵀ ⊙ D), −1))⁻¹ (a unit lower-triangular inverse, computed by
block forward substitution: :func:`unit_lower_inverse`, never a general inverse),
W = T diag(β) (K ⊙ e^{L}), U = T diag(β) V:

    U' = U − W S_0,   O = (Q ⊙ e^{L}) S_0 + (tril₀(Q Kᵀ) ⊙ D) U',
    S_C = e^{L_{C−1}} S_0 + (K ⊙ e^{L_{C−1} − L})ᵀ U'  =  Γ S_0 + R,
    Γ = e^{L_{C−1}} I − (K ⊙ e^{L_{C−1} − L})ᵀ W,   R = (K ⊙ e^{L_{C−1} − L})ᵀ U.

Only non-positive exponents are taken. T, W, U, Γ, R and the in-chunk products do not depend on the
state, so they are computed for all chunks at once as batched matmuls; the only sequential part is
``S ← Γ S + R`` (one [Dk, Dk]·[Dk, Dv] product per chunk); O then follows for all chunks at once from
the saved chunk-initial states. The gradient is JAX's (every step is a matmul or elementwise).
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from spiraljax.ops.impl import Impl, resolve


def _check_shapes(q, k, v, beta, initial_state) -> None:
    chex.assert_rank([q, k, v, beta], [4, 4, 4, 3])
    chex.assert_equal_shape([q, k])
    chex.assert_equal_shape_prefix([q, v, beta], 3)
    if initial_state is not None:
        b, _, h, d = q.shape
        chex.assert_shape(initial_state, (b, h, d, v.shape[-1]))


def _prepare(q, k, v, beta, log_decay, initial_state, dtype):
    b, t, h, d = q.shape
    g = jnp.broadcast_to(jnp.asarray(log_decay, dtype), (b, t, h))
    s0 = (jnp.zeros((b, h, d, v.shape[-1]), dtype) if initial_state is None
          else initial_state.astype(dtype))
    return q.astype(dtype), k.astype(dtype), v.astype(dtype), beta.astype(dtype), g, s0


def _dtype(*xs) -> jnp.dtype:
    """fp32, or fp64 when an input is fp64 (the x64 equality tests)."""
    return jnp.float64 if any(jnp.asarray(x).dtype == jnp.float64 for x in xs if x is not None) else jnp.float32


def delta_rule_scan(q: jax.Array, k: jax.Array, v: jax.Array, beta: jax.Array, log_decay: jax.Array | float,
                    initial_state: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Reference: one ``lax.scan`` step per position,
    ``S ← e^{g_t} S;  S ← S + β_t k_tᵀ (v_t − k_t S);  o_t = q_t S``.

    Args:
      q, k, v, beta, log_decay, initial_state: as :func:`delta_rule`.

    Returns:
      ``(o [B, T, H, Dv], S_T [B, H, Dk, Dv])``.
    """
    _check_shapes(q, k, v, beta, initial_state)
    dt = _dtype(q, k, v, beta, log_decay, initial_state)
    q, k, v, beta, g, s0 = _prepare(q, k, v, beta, log_decay, initial_state, dt)

    def step(s, x):
        qt, kt, vt, bt, gt = x                                   # [B, H, ·]
        s = jnp.exp(gt)[..., None, None] * s
        err = vt - jnp.einsum("bhd,bhde->bhe", kt, s)            # v_t − k_t (λ_t S_{t−1})
        s = s + jnp.einsum("bhd,bhe->bhde", kt, bt[..., None] * err)
        return s, jnp.einsum("bhd,bhde->bhe", qt, s)

    xs = tuple(jnp.swapaxes(a, 0, 1) for a in (q, k, v, beta, g))
    final, out = jax.lax.scan(step, s0, xs)
    return jnp.swapaxes(out, 0, 1), final


def unit_lower_inverse(m: jax.Array) -> jax.Array:
    """``(I + M)⁻¹`` for strictly lower-triangular ``M [..., C, C]`` by block forward substitution:
    the inverse of ``[[A, 0], [X, B]]`` (A, B unit lower-triangular) is ``[[A⁻¹, 0], [−B⁻¹ X A⁻¹, B⁻¹]]``,
    applied level by level from 1×1 blocks up (log₂ C levels of batched matmuls; C is padded to a
    power of two with identity rows). The entries of the result are exact products of the
    substitution, never a general inverse.
    """
    c = m.shape[-1]
    size = 1 << max(c - 1, 0).bit_length()
    if size != c:
        m = jnp.pad(m, [(0, 0)] * (m.ndim - 2) + [(0, size - c), (0, size - c)])
    lead = m.shape[:-2]
    inv = jnp.ones((*lead, size, 1, 1), m.dtype)                 # inverses of the 1×1 diagonal blocks
    s = 1
    while s < size:
        nb = size // (2 * s)
        blocks = m.reshape(*lead, nb, 2 * s, nb, 2 * s)
        idx = jnp.arange(nb)
        diag = blocks[..., idx, :, idx, :]                        # [nb, *lead, 2s, 2s] (advanced index first)
        diag = jnp.moveaxis(diag, 0, -3)                          # [*lead, nb, 2s, 2s]
        x = diag[..., s:, :s]                                     # lower-left block of each 2s-block
        a_inv = inv[..., 0::2, :, :]
        b_inv = inv[..., 1::2, :, :]
        low = -(b_inv @ x @ a_inv)
        zero = jnp.zeros_like(low)
        inv = jnp.concatenate([jnp.concatenate([a_inv, zero], -1), jnp.concatenate([low, b_inv], -1)], -2)
        s *= 2
    inv = inv[..., 0, :, :]
    return inv[..., :c, :c]


def _to_chunks(x, c: int):
    """[B, T, H, ·] → [B, H, n, C, ·] (T a multiple of C)."""
    b, t, h = x.shape[:3]
    x = jnp.moveaxis(x, 2, 1)
    return x.reshape(b, h, t // c, c, *x.shape[3:])


def _from_chunks(x):
    """[B, H, n, C, D] → [B, T, H, D]."""
    b, h, n, c, d = x.shape
    return jnp.moveaxis(x.reshape(b, h, n * c, d), 1, 2)


def delta_rule_chunked(q: jax.Array, k: jax.Array, v: jax.Array, beta: jax.Array, log_decay: jax.Array | float,
                       initial_state: jax.Array | None = None, chunk: int = 64) -> tuple[jax.Array, jax.Array]:
    """Chunk-parallel WY/UT form (module docstring). T is padded to a multiple of C with k = v = 0,
    β = 0, g = 0 rows, which change neither the outputs nor the final state.

    Args:
      q, k, v, beta, log_decay, initial_state: as :func:`delta_rule`.
      chunk: chunk size C (capped at T).

    Returns:
      ``(o, S_T)`` as :func:`delta_rule`.
    """
    _check_shapes(q, k, v, beta, initial_state)
    dt = _dtype(q, k, v, beta, log_decay, initial_state)
    q, k, v, beta, g, s0 = _prepare(q, k, v, beta, log_decay, initial_state, dt)
    b, t, h, dk = q.shape
    c = min(chunk, t)
    pad = (-t) % c
    if pad:
        padder = lambda a: jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))  # noqa: E731
        q, k, v, beta, g = (padder(a) for a in (q, k, v, beta, g))
    qc, kc, vc = _to_chunks(q, c), _to_chunks(k, c), _to_chunks(v, c)       # [B, H, n, C, ·]
    bc, gc = _to_chunks(beta, c), _to_chunks(g, c)                          # [B, H, n, C]
    cum = jnp.cumsum(gc, axis=-1)                                           # L_i
    last = cum[..., -1:]                                                    # L_{C−1}
    causal = jnp.tril(jnp.ones((c, c), bool))
    decay = jnp.exp(jnp.where(causal, cum[..., :, None] - cum[..., None, :], -jnp.inf))  # D [.., C, C]
    kk = kc @ jnp.swapaxes(kc, -1, -2)
    strict = jnp.tril(jnp.ones((c, c), bool), -1)
    inv = unit_lower_inverse(jnp.where(strict, bc[..., None] * kk * decay, 0.0))         # T
    rhs = jnp.concatenate([kc * (bc * jnp.exp(cum))[..., None], vc * bc[..., None]], -1)
    wu = inv @ rhs
    w, u = wu[..., :dk], wu[..., dk:]                                       # W [.., C, Dk], U [.., C, Dv]
    kd = kc * jnp.exp(last - cum)[..., None]                                # K ⊙ e^{L_{C−1} − L}
    gamma_r = jnp.swapaxes(kd, -1, -2) @ wu                                 # [Kdᵀ W | Kdᵀ U]
    gamma = jnp.exp(last)[..., None] * jnp.eye(dk, dtype=dt) - gamma_r[..., :dk]
    r = gamma_r[..., dk:]

    def step(s, x):                                                         # s [B, H, Dk, Dv]
        gm, rm = x
        return gm @ s + rm, s

    final, prev = jax.lax.scan(step, s0, (jnp.moveaxis(gamma, 2, 0), jnp.moveaxis(r, 2, 0)))
    prev = jnp.moveaxis(prev, 0, 2)                                         # S_0 of every chunk
    u_corr = u - w @ prev
    scores = (qc @ jnp.swapaxes(kc, -1, -2)) * decay
    out = (qc * jnp.exp(cum)[..., None]) @ prev + scores @ u_corr
    return _from_chunks(out)[:, :t], final


def delta_rule(q: jax.Array, k: jax.Array, v: jax.Array, beta: jax.Array, log_decay: jax.Array | float, *,
               initial_state: jax.Array | None = None, impl: str | Impl = Impl.CHUNKED,
               chunk: int = 64) -> tuple[jax.Array, jax.Array]:
    """Decayed delta rule ``S_t = λ_t S_{t−1} + β_t k_tᵀ (v_t − λ_t k_t S_{t−1})``, ``o_t = q_t S_t``.

    Args:
      q: ``[B, T, H, Dk]`` (L2-normalised by the caller).
      k: ``[B, T, H, Dk]`` (L2-normalised by the caller).
      v: ``[B, T, H, Dv]``.
      beta: ``[B, T, H]`` write strengths in (0, 1).
      log_decay: g ≤ 0, broadcastable to ``[B, T, H]``.
      initial_state: optional ``[B, H, Dk, Dv]`` (default zeros).
      impl: "scan" (reference), "chunked" (fast) or "auto"; resolved by :func:`spiraljax.ops.impl.resolve`.
      chunk: chunk size of the chunked form.

    Returns:
      ``(o [B, T, H, Dv], S_T [B, H, Dk, Dv])`` in fp32 (fp64 for fp64 inputs).
    """
    _check_shapes(q, k, v, beta, initial_state)
    which = resolve("delta_rule", impl, length=q.shape[1], chunk=chunk)
    if which is Impl.SCAN:
        return delta_rule_scan(q, k, v, beta, log_decay, initial_state)
    return delta_rule_chunked(q, k, v, beta, log_decay, initial_state, chunk)
