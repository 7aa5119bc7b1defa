"""Hebbian fast weights (decayed linear attention) with a recurrent reference and a chunked fast path.

    S_t = exp(g_t)·S_{t−1} + k_tᵀ v_t,      o_t = q_t S_t

``q, k, v`` are ``[B, T, H, D]``, ``log_decay`` g broadcastable to ``[B, T, H]`` (≤ 0), the state
``S`` is ``[B, H, D, D]`` in fp32. The feature map φ and the plasticity α are the caller's.

Chunked form (chunk C, cumulative in-chunk log decay L_i = Σ_{m≤i} g_m):

    O = (Q Kᵀ ⊙ D) V + (Q ⊙ e^{L}) S_prev,       D_ij = e^{L_i − L_j} for i ≥ j, else 0
    S_next = e^{L_{C−1}} S_prev + Σ_j e^{L_{C−1} − L_j} k_jᵀ v_j

All decays stay in log space and only non-positive exponents are ever taken, so nothing needs a
clamp (the original clamped at ±50 and silently lost its fast-forgetting stages).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _prepare(q, k, v, log_decay):
    b, t, h, _ = q.shape
    g = jnp.broadcast_to(jnp.asarray(log_decay, jnp.float32), (b, t, h))
    return q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), g


def fast_weights_scan(q, k, v, log_decay, initial_state=None):
    """Reference: one recurrent step per position with ``lax.scan``."""
    q, k, v, g = _prepare(q, k, v, log_decay)
    b, t, h, d = q.shape
    s0 = jnp.zeros((b, h, d, v.shape[-1]), jnp.float32) if initial_state is None else initial_state.astype(jnp.float32)

    def step(s, x):
        qt, kt, vt, gt = x
        s = jnp.exp(gt)[..., None, None] * s + jnp.einsum("bhd,bhe->bhde", kt, vt)
        return s, jnp.einsum("bhd,bhde->bhe", qt, s)

    xs = tuple(jnp.swapaxes(a, 0, 1) for a in (q, k, v, g))
    final, out = jax.lax.scan(step, s0, xs)
    return jnp.swapaxes(out, 0, 1), final


def fast_weights_chunked(q, k, v, log_decay, initial_state=None, chunk: int = 64):
    """Chunk-parallel form: dense matmuls inside chunks, a scan over chunks carrying S."""
    q, k, v, g = _prepare(q, k, v, log_decay)
    b, t, h, d = q.shape
    e = v.shape[-1]
    c = min(chunk, t)
    pad = (-t) % c
    if pad:  # zero k/v and zero log-decay after the end leave outputs and the final state unchanged
        padder = lambda a: jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))  # noqa: E731
        q, k, v, g = padder(q), padder(k), padder(v), padder(g)
    n = (t + pad) // c
    split = lambda a: jnp.moveaxis(a.reshape(b, n, c, *a.shape[2:]), 1, 0)  # noqa: E731  [n, B, C, ...]
    qs, ks, vs, gs = split(q), split(k), split(v), split(g)
    s0 = jnp.zeros((b, h, d, e), jnp.float32) if initial_state is None else initial_state.astype(jnp.float32)
    causal = jnp.tril(jnp.ones((c, c), bool))
    shared = None
    if jnp.ndim(log_decay) <= 1 and not pad:  # a per-head constant: one decay table serves every chunk
        per_head = jnp.broadcast_to(jnp.asarray(log_decay, jnp.float32), (h,))
        shared = (jnp.arange(1, c + 1, dtype=jnp.float32)[:, None] * per_head)[None]  # L_i, [1, C, H]

    def step(s, x):
        qc, kc, vc, gc = x                                   # [B, C, H, ·]
        cum = jnp.cumsum(gc, axis=1) if shared is None else shared  # L_i, [B or 1, C, H]
        diff = cum[:, :, None, :] - cum[:, None, :, :]       # L_i − L_j, [B, C, C, H]
        decay = jnp.exp(jnp.where(causal[None, :, :, None], diff, -jnp.inf))
        scores = jnp.einsum("bihd,bjhd->bijh", qc, kc) * decay
        intra = jnp.einsum("bijh,bjhe->bihe", scores, vc)
        inter = jnp.einsum("bihd,bhde->bihe", qc * jnp.exp(cum)[..., None], s)
        last = cum[:, -1:, :]                                # L_{C−1}
        w = jnp.exp(last - cum)                              # e^{L_{C−1} − L_j} ≤ 1
        s = jnp.exp(last[:, 0])[..., None, None] * s + jnp.einsum("bjhd,bjhe->bhde", kc * w[..., None], vc)
        return s, intra + inter

    final, out = jax.lax.scan(step, s0, (qs, ks, vs, gs))
    out = jnp.moveaxis(out, 0, 1).reshape(b, n * c, h, e)[:, :t]
    return out, final


def fast_weights(q, k, v, log_decay, *, initial_state=None, impl: str = "chunked", chunk: int = 64):
    """``(o [B, T, H, Dv], S_T [B, H, D, Dv])``; ``impl`` = "scan" (reference) or "chunked" (fast)."""
    if impl == "scan":
        return fast_weights_scan(q, k, v, log_decay, initial_state)
    if impl == "chunked":
        return fast_weights_chunked(q, k, v, log_decay, initial_state, chunk)
    raise ValueError(f"unknown fast_weights impl {impl!r} (scan | chunked)")
