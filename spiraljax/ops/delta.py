"""Delta-rule fast weights with decay (Gated DeltaNet) — a recurrent reference and a chunked fast path.

Layout as :mod:`spiraljax.ops.hebbian`: row vectors, ``S ∈ R^{Dk×Dv}`` read by ``o_t = q_t S_t``
(the column-vector form is the transpose, ``S ∈ R^{dv×dk}``, ``o = S q``). With ``λ_t = exp(g_t)``:

    S_t = λ_t (I − β_t k_tᵀ k_t) S_{t−1} + β_t k_tᵀ v_t
        = λ_t S_{t−1} + β_t k_tᵀ (v_t − λ_t k_t S_{t−1})

(the decay multiplies S_{t−1} before the delta correction, as Gated DeltaNet does, so one
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

Only non-positive exponents are taken. T, W, U and the in-chunk scores do not depend on the state,
so they are computed for all chunks at once as batched matmuls. Two variants (as ``ops/hebbian.py``):

* ``chunked_per_head`` (a per-head constant decay, the model's case, C | T): one decay table shared
  by all chunks; the sequential part is ``U' = U − W S``, ``S ← e^{L_{C−1}} S + Kdᵀ U'`` (two
  [C, D]-sized products per chunk), the outputs follow for all chunks at once from the saved
  chunk-initial states; the backward pass is hand-written (:func:`_chunked_per_head_bwd`).
* ``chunked_general`` (any decay): per-chunk tables, the recurrence as ``S ← Γ S + R``, JAX's gradient.
"""

from __future__ import annotations

from functools import partial

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
    s0 = jnp.zeros((b, h, d, v.shape[-1]), dtype) if initial_state is None else initial_state.astype(dtype)
    return q.astype(dtype), k.astype(dtype), v.astype(dtype), beta.astype(dtype), g, s0


def _dtype(*xs) -> jnp.dtype:
    """fp32, or fp64 when an input is fp64 (the x64 equality tests)."""
    return jnp.float64 if any(jnp.asarray(x).dtype == jnp.float64 for x in xs if x is not None) else jnp.float32


def delta_rule_scan(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    log_decay: jax.Array | float,
    initial_state: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
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
        qt, kt, vt, bt, gt = x  # [B, H, ·]
        s = jnp.exp(gt)[..., None, None] * s
        err = vt - jnp.einsum("bhd,bhde->bhe", kt, s)  # v_t − k_t (λ_t S_{t−1})
        s = s + jnp.einsum("bhd,bhe->bhde", kt, bt[..., None] * err)
        return s, jnp.einsum("bhd,bhde->bhe", qt, s)

    xs = tuple(jnp.swapaxes(a, 0, 1) for a in (q, k, v, beta, g))
    final, out = jax.lax.scan(step, s0, xs)
    return jnp.swapaxes(out, 0, 1), final


def unit_lower_inverse(m: jax.Array) -> jax.Array:
    """``(I + M)⁻¹`` for strictly lower-triangular ``M [..., C, C]`` by block forward substitution:
    the inverse of ``[[A, 0], [X, B]]`` (A, B unit lower-triangular) is ``[[A⁻¹, 0], [−B⁻¹ X A⁻¹, B⁻¹]]``,
    with A⁻¹ and B⁻¹ found the same way (both halves in one batched call, down to 1×1 blocks: log₂ C
    levels of batched matmuls). C is padded to a power of two (identity rows). Never a general inverse.
    """
    c = m.shape[-1]
    size = 1 << max(c - 1, 0).bit_length()
    if size != c:
        m = jnp.pad(m, [(0, 0)] * (m.ndim - 2) + [(0, size - c), (0, size - c)])
    return _unit_lower_inverse_pow2(m)[..., :c, :c]


def _unit_lower_inverse_pow2(m: jax.Array) -> jax.Array:
    s = m.shape[-1]
    if s == 1:
        return jnp.ones_like(m)
    h = s // 2
    halves = _unit_lower_inverse_pow2(jnp.stack([m[..., :h, :h], m[..., h:, h:]], axis=-3))
    a_inv, b_inv = halves[..., 0, :, :], halves[..., 1, :, :]
    low = -(b_inv @ m[..., h:, :h] @ a_inv)
    return jnp.concatenate([jnp.concatenate([a_inv, jnp.zeros_like(low)], -1), jnp.concatenate([low, b_inv], -1)], -2)


def _to_chunks(x, c: int):
    """[B, T, H, ·] → [B, H, n, C, ·] (T a multiple of C)."""
    b, t, h = x.shape[:3]
    x = jnp.moveaxis(x, 2, 1)
    return x.reshape(b, h, t // c, c, *x.shape[3:])


def _from_chunks(x):
    """[B, H, n, C, ·] → [B, T, H, ·]."""
    b, h, n, c = x.shape[:4]
    return jnp.moveaxis(x.reshape(b, h, n * c, *x.shape[4:]), 1, 2)


def _tr(x):
    return jnp.swapaxes(x, -1, -2)


def delta_rule_chunked(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    log_decay: jax.Array | float,
    initial_state: jax.Array | None = None,
    chunk: int = 64,
    unroll: int = 1,
    *,
    impl: str | Impl = Impl.CHUNKED,
) -> tuple[jax.Array, jax.Array]:
    """Chunk-parallel WY/UT form (module docstring), in two variants as
    :func:`spiraljax.ops.hebbian.fast_weights_chunked`: ``chunked_per_head`` (a scalar or ``[H]`` log decay
    and C | T: one shared decay table, hand-written backward) and ``chunked_general`` (any decay; T
    padded to a multiple of C with k = v = 0, β = 0, g = 0 rows, which change neither the outputs nor
    the final state; JAX's gradient).

    Args:
      q, k, v, beta, log_decay, initial_state: as :func:`delta_rule`.
      chunk: chunk size C (capped at T).
      unroll: chunks per loop iteration of the per-head variant's state recurrence.
      impl: "chunked" (variant from the inputs), "chunked_per_head" or "chunked_general".

    Returns:
      ``(o, S_T)`` as :func:`delta_rule`.
    """
    _check_shapes(q, k, v, beta, initial_state)
    b, t, h, _ = q.shape
    which = resolve("delta_rule", impl, length=t, chunk=chunk, per_head_decay=jnp.ndim(log_decay) <= 1)
    if which not in (Impl.CHUNKED_PER_HEAD, Impl.CHUNKED_GENERAL):
        raise ValueError(
            f"delta_rule_chunked impl {str(impl)!r}: one of chunked | chunked_per_head | chunked_general "
            "(the scan is delta_rule_scan)"
        )
    dt = _dtype(q, k, v, beta, log_decay, initial_state)
    c = min(chunk, t)
    if which is Impl.CHUNKED_PER_HEAD:
        g = jnp.broadcast_to(jnp.asarray(log_decay, dt), (h,))
        q, k, v, beta, _, s0 = _prepare(q, k, v, beta, 0.0, initial_state, dt)
        return _chunked_per_head(q, k, v, beta, g, s0, c, unroll)
    return _chunked_general(*_prepare(q, k, v, beta, log_decay, initial_state, dt), c)


def _chunked_general(q, k, v, beta, g, s0, c):
    """Any decay broadcastable to [B, T, H]; every chunk-local product batched over all chunks, the
    state recurrence ``S ← Γ S + R`` as a scan; differentiated by JAX."""
    b, t, h, dk = q.shape
    pad = (-t) % c
    if pad:
        padder = lambda a: jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))  # noqa: E731
        q, k, v, beta, g = (padder(a) for a in (q, k, v, beta, g))
    qc, kc, vc = _to_chunks(q, c), _to_chunks(k, c), _to_chunks(v, c)  # [B, H, n, C, ·]
    bc, gc = _to_chunks(beta, c), _to_chunks(g, c)  # [B, H, n, C]
    cum = jnp.cumsum(gc, axis=-1)  # L_i
    last = cum[..., -1:]  # L_{C−1}
    causal = jnp.tril(jnp.ones((c, c), bool))
    decay = jnp.exp(jnp.where(causal, cum[..., :, None] - cum[..., None, :], -jnp.inf))  # D [.., C, C]
    strict = jnp.tril(jnp.ones((c, c), bool), -1)
    inv = unit_lower_inverse(jnp.where(strict, bc[..., None] * (kc @ _tr(kc)) * decay, 0.0))  # T
    wu = inv @ jnp.concatenate([kc * (bc * jnp.exp(cum))[..., None], vc * bc[..., None]], -1)
    w, u = wu[..., :dk], wu[..., dk:]  # W [.., C, Dk], U [.., C, Dv]
    gamma_r = _tr(kc * jnp.exp(last - cum)[..., None]) @ wu  # [Kdᵀ W | Kdᵀ U]
    gamma = jnp.exp(last)[..., None] * jnp.eye(dk, dtype=q.dtype) - gamma_r[..., :dk]

    def step(s, x):  # s [B, H, Dk, Dv]
        gm, rm = x
        return gm @ s + rm, s

    final, prev = jax.lax.scan(step, s0, (jnp.moveaxis(gamma, 2, 0), jnp.moveaxis(gamma_r[..., dk:], 2, 0)))
    prev = jnp.moveaxis(prev, 0, 2)  # S_0 of every chunk
    out = (qc * jnp.exp(cum)[..., None]) @ prev + ((qc @ _tr(kc)) * decay) @ (u - w @ prev)
    return _from_chunks(out)[:, :t], final


def _decay_tables(g, c: int):
    """Per-head tables for a constant log decay g [H], L_i = (i+1)·g, shaped to broadcast over the
    chunk-major [n, B, H, C, ·]: D (i ≥ j) and its strictly lower part [H, C, C], e^{L} and
    e^{L_{C−1} − L} [H, C, 1], and e^{L_{C−1}} [H, 1, 1] (for a state [B, H, Dk, Dv])."""
    cum = jnp.arange(1, c + 1, dtype=g.dtype)[None, :] * g[:, None]
    causal = jnp.tril(jnp.ones((c, c), bool))
    dm = jnp.exp(jnp.where(causal, cum[:, :, None] - cum[:, None, :], -jnp.inf))
    dms = jnp.where(jnp.tril(jnp.ones((c, c), bool), -1), dm, 0.0)
    return dm, dms, jnp.exp(cum)[..., None], jnp.exp(cum[:, -1:] - cum)[..., None], jnp.exp(cum[:, -1])[:, None, None]


def _to_chunk_major(x, c: int):
    """[B, T, H, ·] → [n, B, H, C, ·] (T a multiple of C): the chunk axis leads, so the loops over chunks
    slice contiguous blocks and stack their outputs without a transpose."""
    b, t, h = x.shape[:3]
    x = x.reshape(b, t // c, c, h, *x.shape[3:])
    return jnp.transpose(x, (1, 0, 3, 2, *range(4, x.ndim)))


def _from_chunk_major(x):
    """[n, B, H, C, ·] → [B, T, H, ·]."""
    n, b, h, c = x.shape[:4]
    return jnp.transpose(x, (1, 0, 3, 2, *range(4, x.ndim))).reshape(b, n * c, h, *x.shape[4:])


def _rowsum(x):
    """Σ over the last axis, as a product with a ones vector: XLA's CPU reduce of these [.., C, D]
    products ran ~10× slower than the matmul (11.6 vs 1.1 ms at the benchmark's shapes)."""
    return (x @ jnp.ones((x.shape[-1], 1), x.dtype))[..., 0]


def _per_head_forward(q, k, v, beta, g, s0, c, unroll):
    """State-independent products for all chunks at once (T, W, U, the scores), then the recurrence
    ``U' = U − W S``, ``S ← e^{L_{C−1}} S + Kdᵀ U'`` over chunks (Kdᵀ transposed beforehand, each chunk's
    initial state saved transposed for the backward pass), then the outputs for all chunks."""
    dm, dms, eq, ek, ea = _decay_tables(g, c)
    qc, kc, vc = _to_chunk_major(q, c), _to_chunk_major(k, c), _to_chunk_major(v, c)  # [n, B, H, C, ·]
    bc = _to_chunk_major(beta, c)[..., None]  # [n, B, H, C, 1]
    kk = kc @ _tr(kc)
    inv = unit_lower_inverse(bc * kk * dms)
    w = inv @ (kc * (bc * eq))
    u = inv @ (vc * bc)

    def step(s, x):
        w_m, u_m, kdt_m = x
        u_corr = u_m - w_m @ s
        return ea * s + kdt_m @ u_corr, (s, _tr(s), u_corr)

    final, (prev, prev_t, u_corr) = jax.lax.scan(step, s0, (w, u, _tr(kc * ek)), unroll=unroll)
    att = (qc @ _tr(kc)) * dm
    out = (qc * eq) @ prev + att @ u_corr
    return _from_chunk_major(out), final, (final, qc, kc, vc, bc, kk, att, inv, w, u, prev_t, u_corr)


@partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _chunked_per_head(q, k, v, beta, g, s0, c, unroll):
    out, final, _ = _per_head_forward(q, k, v, beta, g, s0, c, unroll)
    return out, final


def _chunked_per_head_fwd(q, k, v, beta, g, s0, c, unroll):
    out, final, saved = _per_head_forward(q, k, v, beta, g, s0, c, unroll)
    return (out, final), (g, *saved)


def _chunked_per_head_bwd(c, unroll, res, cotangents):
    """Reverse recurrence over chunks carrying dS (dU' = Pᵀ dO + Kd dS', dS = e^{L_{C−1}} dS' +
    (e^{L} Q)ᵀ dO − Wᵀ dU'), then every chunk at once: dP = dO U'ᵀ ⊙ D, dQ = dP K + e^{L} dO Sᵀ,
    dK = dPᵀ Q + e^{L_{C−1}−L} U' dS'ᵀ + (X + Xᵀ) K + β e^{L} dKb, dW = −dU' Sᵀ,
    [dKb | dVb] = Tᵀ [dW | dU'], dA = −Tᵀ ([dW | dU'] [Kb | Vb]ᵀ) Tᵀ = −[dKb | dVb] [W | U]ᵀ on the strict
    lower part, X = β dA ⊙ D, dβ = Σ_j dA ⊙ K Kᵀ + e^{L} Σ dKb ⊙ K + Σ dVb ⊙ V, dV = β dVb.
    The decay: with ℓ_t = Σ_{s≤t} g_s, o depends on ℓ only through q_t e^{ℓ_t}, v_t e^{−ℓ_t} and the
    final S_T e^{ℓ_T}, so dℓ_t = q_t·dq_t − v_t·dv_t (+ ⟨dS_T, S_T⟩ at T) and dg = Σ_t (t+1) dℓ_t."""
    g, final, qc, kc, vc, bc, kk, att, inv, w, u, prev_t, u_corr = res
    d_out, d_final = cotangents
    dm, dms, eq, ek, ea = _decay_tables(g, c)
    doc = _to_chunk_major(d_out, c)

    def step(ds, x):  # ds = dL/dS after this chunk
        pdo_m, kd_m, wt_m, qdo_m = x
        du = pdo_m + kd_m @ ds
        return ea * ds + qdo_m - wt_m @ du, (_tr(ds), du)

    xs = (_tr(att) @ doc, kc * ek, _tr(w), _tr(qc * eq) @ doc)
    ds0, (after_t, du) = jax.lax.scan(step, d_final, xs, reverse=True, unroll=unroll)
    dp = (doc @ _tr(u_corr)) * dm
    dq = dp @ kc + (doc @ prev_t) * eq
    dkb = _tr(inv) @ -(du @ prev_t)  # Tᵀ dW
    dvb = _tr(inv) @ du
    da = -(dkb @ _tr(w) + dvb @ _tr(u)) * dms
    x = bc * da
    dk = _tr(dp) @ qc + (u_corr @ after_t) * ek + (x + _tr(x)) @ kc + dkb * (bc * eq)
    dbeta = _rowsum(da * kk) + eq[..., 0] * _rowsum(dkb * kc) + _rowsum(dvb * vc)
    dv = dvb * bc
    n = qc.shape[0]
    pos = jnp.arange(1, n * c + 1, dtype=qc.dtype).reshape(n, 1, 1, c)  # t + 1 of each chunk row
    dl = _rowsum(qc * dq) - _rowsum(vc * dv)  # dℓ_t, [n, B, H, C]
    dg = jnp.sum(pos * dl, axis=(0, 1, 3)) + n * c * jnp.sum(d_final * final, axis=(0, 2, 3))
    return (
        _from_chunk_major(dq),
        _from_chunk_major(dk),
        _from_chunk_major(dv),
        _from_chunk_major(dbeta[..., None])[..., 0],
        dg,
        ds0,
    )


_chunked_per_head.defvjp(_chunked_per_head_fwd, _chunked_per_head_bwd)


def delta_rule(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    log_decay: jax.Array | float,
    *,
    initial_state: jax.Array | None = None,
    impl: str | Impl = Impl.CHUNKED,
    chunk: int = 64,
) -> tuple[jax.Array, jax.Array]:
    """Decayed delta rule ``S_t = λ_t S_{t−1} + β_t k_tᵀ (v_t − λ_t k_t S_{t−1})``, ``o_t = q_t S_t``.

    Args:
      q: ``[B, T, H, Dk]`` (L2-normalised by the caller).
      k: ``[B, T, H, Dk]`` (L2-normalised by the caller).
      v: ``[B, T, H, Dv]``.
      beta: ``[B, T, H]`` write strengths in (0, 1).
      log_decay: g ≤ 0, broadcastable to ``[B, T, H]``.
      initial_state: optional ``[B, H, Dk, Dv]`` (default zeros).
      impl: "scan" (reference), "chunked" (fast; its variant follows from the decay's shape and T, see
        :func:`delta_rule_chunked`), "chunked_per_head" / "chunked_general" by name, or "auto";
        resolved by :func:`spiraljax.ops.impl.resolve`.
      chunk: chunk size of the chunked form.

    Returns:
      ``(o [B, T, H, Dv], S_T [B, H, Dk, Dv])`` in fp32 (fp64 for fp64 inputs).
    """
    _check_shapes(q, k, v, beta, initial_state)
    which = resolve("delta_rule", impl, length=q.shape[1], chunk=chunk, per_head_decay=jnp.ndim(log_decay) <= 1)
    if which is Impl.SCAN:
        return delta_rule_scan(q, k, v, beta, log_decay, initial_state)
    return delta_rule_chunked(q, k, v, beta, log_decay, initial_state, chunk, impl=which)
