"""Hebbian fast weights (decayed linear attention) with a recurrent reference and a chunked fast path.

    S_t = exp(g_t)·S_{t−1} + k_tᵀ v_t,      o_t = q_t S_t

``q, k, v`` are ``[B, T, H, D]``, ``log_decay`` g broadcastable to ``[B, T, H]`` (≤ 0), the state
``S`` is ``[B, H, D, D]`` in fp32 (fp64 when an input is fp64: the float64 equality tests).
The feature map φ and the plasticity α are the caller's.

Chunked form (chunk C, cumulative in-chunk log decay L_i = Σ_{m≤i} g_m):

    O = (Q Kᵀ ⊙ D) V + (Q ⊙ e^{L}) S_prev,       D_ij = e^{L_i − L_j} for i ≥ j, else 0
    S_next = e^{L_{C−1}} S_prev + Σ_j e^{L_{C−1} − L_j} k_jᵀ v_j

All decays stay in log space and only non-positive exponents are ever taken, so nothing needs a
clamp (the original clamped at ±50 and silently lost its fast-forgetting stages).

When the decay is a per-head constant g (the model's case) every chunk shares one decay table and
the backward pass is hand-written (a reverse scan over chunks carrying dS, with the saved per-chunk
states), using dL/dL_t = q_t·dq_t − k_t·dk_t for the log-decay gradient:

    dA = (dO Vᵀ) ⊙ D,  dQ = dA K + e^{L} ⊙ (dO S_prevᵀ),  dK = dAᵀ Q + e^{L_{C−1} − L} ⊙ (V dS_nextᵀ),
    dV = Aᵀ dO + (K ⊙ e^{L_{C−1} − L}) dS_next,  dS_prev = e^{L_{C−1}} dS_next + (Q ⊙ e^{L})ᵀ dO,
    dg = Σ_t (t+1)(q_t·dq_t − k_t·dk_t) + T·⟨dS_T, S_T⟩.
"""

from __future__ import annotations

from functools import partial

import chex
import jax
import jax.numpy as jnp

from spiraljax.ops.impl import Impl, resolve


def _dtype(*xs) -> jnp.dtype:
    """fp32, or fp64 when an input is fp64 (the x64 equality tests)."""
    return jnp.float64 if any(jnp.asarray(x).dtype == jnp.float64 for x in xs if x is not None) else jnp.float32


def _prepare(q, k, v, log_decay, dtype=jnp.float32):
    b, t, h, _ = q.shape
    g = jnp.broadcast_to(jnp.asarray(log_decay, dtype), (b, t, h))
    return q.astype(dtype), k.astype(dtype), v.astype(dtype), g


def _check_shapes(q: jax.Array, k: jax.Array, v: jax.Array, initial_state: jax.Array | None) -> None:
    """Static shape checks shared by the public entry points (free under jit)."""
    chex.assert_rank([q, k, v], 4)
    chex.assert_equal_shape([q, k])
    chex.assert_equal_shape_prefix([q, v], 3)
    if initial_state is not None:
        b, _, h, d = q.shape
        chex.assert_shape(initial_state, (b, h, d, v.shape[-1]))


def fast_weights_scan(
    q: jax.Array, k: jax.Array, v: jax.Array, log_decay: jax.Array | float, initial_state: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Reference: one recurrent step per position with ``lax.scan``,
    ``S_t = exp(g_t)·S_{t−1} + k_tᵀ v_t``, ``o_t = q_t S_t``.

    Args:
      q, k, v, log_decay, initial_state: as :func:`fast_weights`.

    Returns:
      ``(o, S_T)`` as :func:`fast_weights`.
    """
    _check_shapes(q, k, v, initial_state)
    dt = _dtype(q, k, v, log_decay, initial_state)
    q, k, v, g = _prepare(q, k, v, log_decay, dt)
    b, t, h, d = q.shape
    s0 = jnp.zeros((b, h, d, v.shape[-1]), dt) if initial_state is None else initial_state.astype(dt)

    def step(s, x):
        qt, kt, vt, gt = x
        s = jnp.exp(gt)[..., None, None] * s + jnp.einsum("bhd,bhe->bhde", kt, vt)
        return s, jnp.einsum("bhd,bhde->bhe", qt, s)

    xs = tuple(jnp.swapaxes(a, 0, 1) for a in (q, k, v, g))
    final, out = jax.lax.scan(step, s0, xs)
    return jnp.swapaxes(out, 0, 1), final


def fast_weights_chunked(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    log_decay: jax.Array | float,
    initial_state: jax.Array | None = None,
    chunk: int = 64,
    unroll: int = 2,
    *,
    impl: str | Impl = Impl.CHUNKED,
) -> tuple[jax.Array, jax.Array]:
    """Chunk-parallel form (equations in the module docstring): dense matmuls inside chunks, a scan
    over chunks carrying S (``unroll`` chunks per loop iteration: 2 was fastest on a 2-core CPU).

    Args:
      q, k, v, log_decay, initial_state: as :func:`fast_weights`.
      chunk: chunk size C (capped at T).
      unroll: chunks per scan iteration.
      impl: "chunked" (the variant :func:`spiraljax.ops.impl.resolve` picks: "chunked_per_head" — shared
        decay table, hand-written backward — for a scalar or ``[H]`` decay with C | T, else
        "chunked_general"), or one of the two by name.

    Returns:
      ``(o, S_T)`` as :func:`fast_weights`.
    """
    _check_shapes(q, k, v, initial_state)
    b, t, h, d = q.shape
    which = resolve("fast_weights", impl, length=t, chunk=chunk, per_head_decay=jnp.ndim(log_decay) <= 1)
    if which not in (Impl.CHUNKED_PER_HEAD, Impl.CHUNKED_GENERAL):
        raise ValueError(
            f"fast_weights_chunked impl {str(impl)!r}: one of chunked | chunked_per_head | "
            "chunked_general (the scan is fast_weights_scan)"
        )
    c = min(chunk, t)
    dt = _dtype(q, k, v, log_decay, initial_state)
    s0 = jnp.zeros((b, h, d, v.shape[-1]), dt) if initial_state is None else initial_state.astype(dt)
    if which is Impl.CHUNKED_PER_HEAD:
        g = jnp.broadcast_to(jnp.asarray(log_decay, dt), (h,))
        return _chunked_per_head(q.astype(dt), k.astype(dt), v.astype(dt), g, s0, c, unroll)
    return _chunked_general(q, k, v, log_decay, s0, c, unroll)


def _chunked_general(q, k, v, log_decay, s0, c, unroll):
    """Any decay broadcastable to [B, T, H] (per-step values included); differentiated by JAX."""
    q, k, v, g = _prepare(q, k, v, log_decay, s0.dtype)
    b, t, h, d = q.shape
    e = v.shape[-1]
    pad = (-t) % c
    if pad:  # zero k/v and zero log-decay after the end leave outputs and the final state unchanged
        padder = lambda a: jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))  # noqa: E731
        q, k, v, g = padder(q), padder(k), padder(v), padder(g)
    n = (t + pad) // c
    split = lambda a: jnp.moveaxis(a.reshape(b, n, c, *a.shape[2:]), 1, 0)  # noqa: E731  [n, B, C, ...]
    causal = jnp.tril(jnp.ones((c, c), bool))

    def step(s, x):
        qc, kc, vc, gc = x  # [B, C, H, ·]
        cum = jnp.cumsum(gc, axis=1)  # L_i, [B, C, H]
        diff = cum[:, :, None, :] - cum[:, None, :, :]  # L_i − L_j, [B, C, C, H]
        decay = jnp.exp(jnp.where(causal[None, :, :, None], diff, -jnp.inf))
        scores = jnp.einsum("bihd,bjhd->bijh", qc, kc) * decay
        intra = jnp.einsum("bijh,bjhe->bihe", scores, vc)
        inter = jnp.einsum("bihd,bhde->bihe", qc * jnp.exp(cum)[..., None], s)
        last = cum[:, -1:, :]  # L_{C−1}
        w = jnp.exp(last - cum)  # e^{L_{C−1} − L_j} ≤ 1
        s = jnp.exp(last[:, 0])[..., None, None] * s + jnp.einsum("bjhd,bjhe->bhde", kc * w[..., None], vc)
        return s, intra + inter

    final, out = jax.lax.scan(step, s0, (split(q), split(k), split(v), split(g)), unroll=unroll)
    out = jnp.moveaxis(out, 0, 1).reshape(b, n * c, h, e)[:, :t]
    return out, final


def _decay_tables(g, c: int):
    """Per-head tables for a constant log decay g [H]: D [H, C, C], e^{L} and e^{L_{C−1} − L} [H, C, 1],
    e^{L_{C−1}} [H, 1, 1], with L_i = (i+1)·g."""
    cum = jnp.arange(1, c + 1, dtype=g.dtype)[None, :] * g[:, None]
    causal = jnp.tril(jnp.ones((c, c), bool))
    dm = jnp.exp(jnp.where(causal, cum[:, :, None] - cum[:, None, :], -jnp.inf))
    return dm, jnp.exp(cum)[..., None], jnp.exp(cum[:, -1:] - cum)[..., None], jnp.exp(cum[:, -1])[:, None, None]


def _to_chunks(x, c: int):
    """[B, T, H, D] → [n, B, H, C, D] (chunk-major, heads as a batch axis of the matmuls)."""
    b, t, h, d = x.shape
    return jnp.moveaxis(jnp.transpose(x, (0, 2, 1, 3)).reshape(b, h, t // c, c, d), 2, 0)


def _from_chunks(x):
    n, b, h, c, d = x.shape
    return jnp.transpose(jnp.moveaxis(x, 0, 2).reshape(b, h, n * c, d), (0, 2, 1, 3))


def _tr(x):
    return jnp.swapaxes(x, -1, -2)


def _per_head_forward(q, k, v, g, s0, c, unroll):
    dm, eq, ek, ea = _decay_tables(g, c)

    def step(s, x):
        qc, kc, vc = x  # [B, H, C, ·]
        att = (qc @ _tr(kc)) * dm
        out = att @ vc + (qc * eq) @ s
        return ea * s + _tr(kc * ek) @ vc, (out, s, att)

    xs = (_to_chunks(q, c), _to_chunks(k, c), _to_chunks(v, c))
    final, (out, prev, att) = jax.lax.scan(step, s0, xs, unroll=unroll)
    return _from_chunks(out), final, prev, att


@partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _chunked_per_head(q, k, v, g, s0, c, unroll):
    out, final, _, _ = _per_head_forward(q, k, v, g, s0, c, unroll)
    return out, final


def _chunked_per_head_fwd(q, k, v, g, s0, c, unroll):
    out, final, prev, att = _per_head_forward(q, k, v, g, s0, c, unroll)
    return (out, final), (q, k, v, g, final, prev, att)


def _chunked_per_head_bwd(c, unroll, res, cotangents):
    q, k, v, g, final, prev, att = res
    d_out, d_final = cotangents
    dm, eq, ek, ea = _decay_tables(g, c)

    def step(ds, x):  # ds = dL/dS after this chunk
        qc, kc, vc, doc, s_prev, a = x
        da = (doc @ _tr(vc)) * dm
        dq = da @ kc + (doc @ _tr(s_prev)) * eq
        dk = _tr(da) @ qc + (vc @ _tr(ds)) * ek
        dv = _tr(a) @ doc + (kc * ek) @ ds
        return ea * ds + _tr(qc * eq) @ doc, (dq, dk, dv)

    xs = (_to_chunks(q, c), _to_chunks(k, c), _to_chunks(v, c), _to_chunks(d_out, c), prev, att)
    ds0, (dq, dk, dv) = jax.lax.scan(step, d_final, xs, reverse=True, unroll=unroll)
    dq, dk, dv = _from_chunks(dq), _from_chunks(dk), _from_chunks(dv)
    t = q.shape[1]
    pos = jnp.arange(1, t + 1, dtype=q.dtype)[None, :, None]  # L_t = (t+1)·g
    dl = jnp.sum(q * dq, -1) - jnp.sum(k * dk, -1)  # dL/dL_t, [B, T, H]
    dg = jnp.sum(pos * dl, axis=(0, 1)) + t * jnp.sum(d_final * final, axis=(0, 2, 3))
    return dq, dk, dv, dg, ds0


_chunked_per_head.defvjp(_chunked_per_head_fwd, _chunked_per_head_bwd)


def fast_weights(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    log_decay: jax.Array | float,
    *,
    initial_state: jax.Array | None = None,
    impl: str | Impl = Impl.CHUNKED,
    chunk: int = 64,
) -> tuple[jax.Array, jax.Array]:
    """Decayed linear attention ``S_t = exp(g_t)·S_{t−1} + k_tᵀ v_t``, ``o_t = q_t S_t``.

    Args:
      q: ``[B, T, H, D]``.
      k: ``[B, T, H, D]``.
      v: ``[B, T, H, Dv]``.
      log_decay: g ≤ 0, broadcastable to ``[B, T, H]``.
      initial_state: optional ``[B, H, D, Dv]`` (default zeros).
      impl: "scan" (reference), "chunked" (fast; its variant follows from the decay's shape and
        T, see :func:`fast_weights_chunked`), "chunked_per_head" / "chunked_general" by name, or "auto"
        (per platform); resolved by :func:`spiraljax.ops.impl.resolve`.
      chunk: chunk size of the chunked form.

    Returns:
      ``(o [B, T, H, Dv], S_T [B, H, D, Dv])`` in fp32 (fp64 for fp64 inputs).
    """
    _check_shapes(q, k, v, initial_state)
    which = resolve("fast_weights", impl, length=q.shape[1], chunk=chunk, per_head_decay=jnp.ndim(log_decay) <= 1)
    if which is Impl.SCAN:
        return fast_weights_scan(q, k, v, log_decay, initial_state)
    return fast_weights_chunked(q, k, v, log_decay, initial_state, chunk, impl=which)
