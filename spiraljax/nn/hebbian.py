"""Layers of the Hebbian byte LM: patch encoder, Hebbian memory, hybrid block, reasoning loop, GRU head."""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from spiraljax.nn.layers import MLP, DenseFactory, SelfAttention, lora_dense
from spiraljax.ops.attention import apply_rope, local_attention
from spiraljax.ops.delta import delta_rule
from spiraljax.ops.hebbian import fast_weights
from spiraljax.ops.shifted import shifted_fast_weights


class PatchEncoder(nn.Module):
    """Bytes ``[B, T]`` → patch latents ``[B, T/P, d]``: embedding, stride-P conv (kernel P), rotary code
    on the latent (position = patch index), LayerNorm, dropout. Patch p sees only its own P bytes.
    ``dtype``: compute dtype of the conv (the LayerNorm output, the blocks' residual stream, is float32)."""

    d_model: int
    patch: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens, train: bool = False, offset=0):
        """``offset``: patch index of the first patch, one for all rows (an int or scalar) or one per
        row (``[B]`` int: a carried state's counter)."""
        b, t = tokens.shape
        x = nn.Embed(256, self.d_model, embedding_init=nn.initializers.normal(0.02), name="byte_embed")(tokens)
        x = x.reshape(b, t // self.patch, self.patch * self.d_model)
        z = nn.Dense(self.d_model, dtype=self.dtype, name="patch_conv")(x)  # = Conv(kernel P, stride P)
        if jnp.ndim(offset) == 1:  # per-row positions: the same rotation, row by row
            positions = offset[:, None] + jnp.arange(t // self.patch)
            z = jax.vmap(lambda zr, pr: apply_rope(zr[None], pr)[0])(z, positions)
        else:
            z = apply_rope(z, offset + jnp.arange(t // self.patch))
        z = nn.LayerNorm(name="ln")(z)
        return nn.Dropout(self.dropout, deterministic=not train)(z)


def _l2_normalise(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """``x / sqrt(‖x‖² + eps)`` over the last axis."""
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def _shift_taps_init(key, shape, dtype=jnp.float32):
    """Causal key-convolution taps ``[H, K]`` starting as the pure shift (tap 1 = 1: ``k̃_t = k_{t−1}``)."""
    del key
    return jnp.zeros(shape, dtype).at[:, 1].set(1.0)


class HebbianMemory(nn.Module):
    """Decayed fast-weight memory per head (fp32), with one of three write rules (``rule``). All share
    the learnable decay λ_h = (0.99 + 0.01σ(w_h))·α and the input projections ``W_q, W_k, W_v`` of u.

    * ``hebbian`` (AGIFORMER's): φ(z) = ELU(z) + 1, q = φ(W_q u)/√D, k = φ(W_k u), v = W_v u,
      o_t = Σ_{j≤t} λ^{t−j}(q_t·k_j) v_j / (Σ_{j≤t} λ^{t−j} q_t·k_j + 1e−6)  (normaliser: same op with v = 1).
    * ``shifted``: as ``hebbian`` but the key written at t is k̃_t = φ(Σ_{j<K} c_{h,j} (W_k u)_{t−j}), a
      learned causal convolution of width K = ``shift_kernel`` over the key inputs, started as the pure
      shift k̃_t = k_{t−1} (so ``k_{t−1} ⊗ v_t`` is stored). The convolution acts before φ, so k̃ > 0 and
      the same normaliser (v = 1 column, written with k̃) stays positive; it is kept.
    * ``delta``: q, k L2-normalised (no φ), β_t = σ(w_β·u_t) per head,
      S_t = λ S_{t−1} + β_t k_tᵀ(v_t − λ k_t S_{t−1}), o_t = q_t S_t. No normaliser: with ‖k‖ = 1 and
      β ∈ (0, 1) each step is a contraction, so S stays bounded by the values written (the sum-of-keys
      normaliser would not describe what the corrected state holds).

    ``carry``: the layer's carried memory, ``{"memory": S [B, H, D, D+1] (delta: [B, H, D, D]),
    "keys": [B, K−1, H, D]}`` (keys: ``shifted`` only: the last key inputs), or None (zeros). Returns
    the output, the log decay per head and the final carry (same structure).
    ``dense``: factory of the q, k, v, (β,) out projections (default: plain, no adapter); with a
    bfloat16 factory only the projections and the output LayerNorm run in bfloat16: the features,
    v, the decay, the state and the normaliser are float32.
    """

    n_heads: int
    impl: str = "chunked"
    chunk: int = 64
    dropout: float = 0.0
    dense: DenseFactory | None = None
    dtype: Any = jnp.float32
    rule: str = "hebbian"
    shift_kernel: int = 2

    @nn.compact
    def __call__(self, u, alpha, carry=None, train: bool = False):
        b, t, d = u.shape
        hd = d // self.n_heads
        dense = self.dense or lora_dense()
        carry = carry or {}
        proj = lambda name: dense((self.n_heads, hd), name=name)(u).astype(jnp.float32)  # noqa: E731
        phi = lambda x: nn.elu(x) + 1.0  # noqa: E731
        if self.rule == "delta":
            q, k = _l2_normalise(proj("q")), _l2_normalise(proj("k"))
        else:
            q = phi(proj("q")) / jnp.sqrt(hd)
            k = phi(proj("k")) if self.rule == "hebbian" else proj("k")  # shifted: key inputs, φ after the conv
        v = proj("v")
        w = self.param("decay_logit", nn.initializers.zeros, (self.n_heads,))
        log_decay = jnp.log(0.99 + 0.01 * nn.sigmoid(w)) + jnp.log(jnp.asarray(alpha, jnp.float32))
        out_carry = {}
        if self.rule == "delta":
            beta = nn.sigmoid(dense((self.n_heads,), name="beta")(u).astype(jnp.float32))
            o, out_carry["memory"] = delta_rule(
                q, k, v, beta, log_decay, initial_state=carry.get("memory"), impl=self.impl, chunk=self.chunk
            )
        else:
            v1 = jnp.concatenate([v, jnp.ones((b, t, self.n_heads, 1), jnp.float32)], axis=-1)
            if self.rule == "hebbian":
                o, out_carry["memory"] = fast_weights(
                    q, k, v1, log_decay, initial_state=carry.get("memory"), impl=self.impl, chunk=self.chunk
                )
            else:
                taps = self.param("shift_taps", _shift_taps_init, (self.n_heads, self.shift_kernel))
                o, out_carry["memory"], out_carry["keys"] = shifted_fast_weights(
                    q,
                    k,
                    v1,
                    log_decay,
                    taps,
                    phi,
                    initial_state=carry.get("memory"),
                    initial_keys=carry.get("keys"),
                    impl=self.impl,
                    chunk=self.chunk,
                )
            o = o[..., :hd] / (o[..., hd:] + 1e-6)
        o = dense(d, axis=(-2, -1), name="out")(o)
        o = nn.LayerNorm(dtype=self.dtype, name="ln")(o)
        return nn.Dropout(self.dropout, deterministic=not train)(o), log_decay, out_carry


class HybridBlock(nn.Module):
    """``h ← h + W_o(SWA(u) + Mem(u))`` with ``u = LN(h)``, then ``h ← h + MLP(LN h)`` (4d, GELU).

    SWA: patch i attends patches ``i − window + 1 … i`` through :func:`~spiraljax.ops.attention.local_attention`
    (``auto``: blocked, O(S·w), at S ≥ 128 on CPU; the dense masked reference below that).

    ``carry``: the memory's carried state (:class:`HebbianMemory`), returned updated.
    For streaming, ``history [B, S, d]`` holds the block inputs of the S previous patches
    (``history_valid [B, S]`` marks the filled slots): attention then runs over history + h, so a
    new patch sees the same window it would see in one full pass. ``dense``: factory of every
    projection of the block (attention, memory, mix, MLP; default: plain, no adapter). ``dtype``: of
    the LayerNorm outputs (give ``dense`` the same; the residual ``h`` keeps its own dtype).
    ``train`` may be passed positionally (``nn.remat(HybridBlock, static_argnums=(4,))``).
    """

    n_heads: int
    window: int
    impl: str = "chunked"
    chunk: int = 64
    dropout: float = 0.0
    dense: DenseFactory | None = None
    dtype: Any = jnp.float32
    rule: str = "hebbian"
    shift_kernel: int = 2

    @nn.compact
    def __call__(self, h, alpha, carry=None, train: bool = False, history=None, history_valid=None):
        b, t, d = h.shape
        if history is None:  # a full pass is a stream with nothing before it
            history, history_valid = jnp.zeros((b, 0, d), h.dtype), jnp.zeros((b, 0), bool)
        full = jnp.concatenate([history.astype(h.dtype), h], axis=1)
        valid = jnp.concatenate([history_valid, jnp.ones((b, t), bool)], axis=1)
        dense = self.dense or lora_dense()
        u_full = nn.LayerNorm(dtype=self.dtype, name="ln_1")(full)
        attend = partial(local_attention, window=self.window, key_valid=valid)  # O(S·w), no S×S mask
        swa = SelfAttention(self.n_heads, rope=False, attend=attend, dense=dense, name="swa")(u_full)[:, -t:]
        u = u_full[:, -t:]
        mem, log_decay, state = HebbianMemory(
            self.n_heads,
            self.impl,
            self.chunk,
            self.dropout,
            dense,
            self.dtype,
            self.rule,
            self.shift_kernel,
            name="memory",
        )(u, alpha, carry, train)
        h = h + dense(d, name="mix")(swa + mem)
        m = nn.LayerNorm(dtype=self.dtype, name="ln_2")(h)
        m = MLP(4 * d, "gelu", self.dtype, dense, use_bias=True, draws_as="mlp_", name="mlp")(m)
        return h + nn.Dropout(self.dropout, deterministic=not train)(m), log_decay, state


class ReasoningLoop(nn.Module):
    """``z ← z + σ(W_g LN z) ⊙ MLP(LN z)`` repeated ``steps`` times with shared weights (per position).
    ``dtype``: compute dtype of the LayerNorm output and the MLP (the residual z keeps its own dtype)."""

    steps: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z):
        ln, gate = nn.LayerNorm(dtype=self.dtype, name="ln"), nn.Dense(z.shape[-1], dtype=self.dtype, name="gate")
        up = nn.Dense(2 * z.shape[-1], dtype=self.dtype, name="up")
        down = nn.Dense(z.shape[-1], dtype=self.dtype, name="down")
        sizes = []
        for _ in range(self.steps):
            y = ln(z)
            delta = nn.sigmoid(gate(y)) * down(nn.gelu(up(y)))
            z = z + delta
            sizes.append(jnp.sqrt(jnp.mean(delta.astype(jnp.float32) ** 2)))
        return z, jnp.stack(sizes) if sizes else jnp.zeros((0,))


class _Affine(nn.Module):
    """Declares a ``kernel`` (and ``bias``) exactly as a Flax Dense layer of that name would and
    returns them, so a GRU's gates can be applied as concatenated matrices with unchanged parameters."""

    shape: tuple[int, int]
    kernel_init: nn.initializers.Initializer
    use_bias: bool

    @nn.compact
    def __call__(self):
        kernel = self.param("kernel", self.kernel_init, self.shape)
        bias = self.param("bias", nn.initializers.zeros, self.shape[1:]) if self.use_bias else None
        return kernel, bias


class _GRUWeights(nn.Module):
    """The parameters of ``nn.GRUCell(hidden)`` for inputs of size ``n_in``, as concatenated matrices:
    ``W_i [n_in, 3H]`` (gates r, z, n), ``b_i [3H]``, ``W_h [H, 3H]``, ``b_hn [H]``."""

    n_in: int
    hidden: int

    @nn.compact
    def __call__(self):
        h = self.hidden
        lecun, orth = nn.initializers.lecun_normal(), nn.initializers.orthogonal()
        wi, bi = zip(*(_Affine((self.n_in, h), lecun, True, name=f"i{g}")() for g in "rzn"))
        hr, hz = (_Affine((h, h), orth, False, name=f"h{g}")()[0] for g in "rz")
        hn, b_hn = _Affine((h, h), orth, True, name="hn")()
        return jnp.concatenate(wi, -1), jnp.concatenate(bi, -1), jnp.concatenate([hr, hz, hn], -1), b_hn


class LocalHead(nn.Module):
    """GRU over the bytes of the next patch, teacher-forced: inputs ``x_j = [E(b_{j−1}); W_p z]`` with
    ``b_{−1}`` = start; hidden starts at zero; Linear → 256 logits per byte.

    GRU (as ``nn.GRUCell``): r = σ(W_ir x + W_hr h + b_r), g = σ(W_iz x + W_hz h + b_z),
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h ← (1 − g) ⊙ n + g ⊙ h.
    Fast path: the input side is linear, so ``W_i x_j = (E W_i^emb)[b_{j−1}] + W_i^ctx W_p z`` — one
    257-row table and one projection per patch instead of a matmul per byte; only ``W_h h`` stays in
    the loop. ``reference=True`` runs ``nn.GRUCell`` on the same parameters (tested equal).

    ``context_norm``: the context enters as ``W_p LN(z)`` (LayerNorm without scale or bias, so no new
    parameters): the reasoning loop's residual z grows without bound (rms 1 → 10 in 50 steps), which
    saturated the gates and hid the byte inputs; ``embed_std``: the byte embedding's init scale, 1 so
    that both halves of ``x_j`` start at unit scale (0.02 made ``E W_i`` 50× smaller than the context's
    share). Both measured in docs/results/hebbian.md ("Stable under float rounding").
    """

    hidden: int = 256
    context_norm: bool = True
    embed_std: float = 1.0

    @nn.compact
    def __call__(self, context, prev_bytes, reference: bool = False):
        """``context [N, d]``, ``prev_bytes [N, P]`` (start symbol 256 first) → logits ``[N, P, 256]``."""
        embed = nn.Embed(257, self.hidden, embedding_init=nn.initializers.normal(self.embed_std), name="embed")
        if self.context_norm:
            context = nn.LayerNorm(use_scale=False, use_bias=False, name="context_norm")(context)
        ctx = nn.Dense(self.hidden, name="ctx")(context)
        out = nn.Dense(256, name="out")
        h = jnp.zeros((context.shape[0], self.hidden), ctx.dtype)
        if reference:
            emb = embed(prev_bytes)
            x = jnp.concatenate([emb, jnp.broadcast_to(ctx[:, None, :], emb.shape)], axis=-1)
            scan = nn.scan(
                lambda c, carry, xt: c(carry, xt),
                variable_broadcast="params",
                split_rngs={"params": False},
                in_axes=1,
                out_axes=1,
            )
            _, ys = scan(nn.GRUCell(self.hidden, name="gru"), h, x)
            return out(ys)
        w_i, b_i, w_h, b_hn = _GRUWeights(2 * self.hidden, self.hidden, name="gru")()
        table = embed(jnp.arange(257)) @ w_i[: self.hidden]  # [257, 3H]
        x_gates = table[prev_bytes] + (ctx @ w_i[self.hidden :] + b_i)[:, None]  # [N, P, 3H]
        ys = []
        for j in range(prev_bytes.shape[1]):  # P is small and static: a plain unrolled loop
            xr, xz, xn = jnp.split(x_gates[:, j], 3, axis=-1)
            hr, hz, hn = jnp.split(h @ w_h, 3, axis=-1)
            r, g = nn.sigmoid(xr + hr), nn.sigmoid(xz + hz)
            h = (1.0 - g) * jnp.tanh(xn + r * (hn + b_hn)) + g * h
            ys.append(h)
        return out(jnp.stack(ys, axis=1))
