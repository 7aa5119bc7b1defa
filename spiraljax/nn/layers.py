"""Shared Flax building blocks of every attention family: attention with RoPE (optional smeared keys,
any pattern through ``attend=``), MLP, pre-norm Transformer block.

Every linear layer comes from a dense-layer factory (:data:`DenseFactory`, by default
:func:`lora_dense` with rank 0 = a plain bias-free Dense), so one implementation serves the dense
baseline, Spiralformer and the Hebbian model, with or without LoRA adapters.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core.scope import LazyRng

from spiraljax.nn.lora import LoRADense
from spiraljax.ops.attention import apply_rope, causal_attention

AttentionFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
# dense(features, *, axis=-1, name=..., use_bias=False) → a linear module y = x W (+ b) contracting ``axis`` of x
DenseFactory = Callable[..., nn.Module]


def lora_dense(rank: int = 0, alpha: float = 16.0, dtype: Any = jnp.float32) -> DenseFactory:
    """Factory of :class:`LoRADense` layers ``y = x W + (α/r) x A B``; ``rank = 0``: plain ``x W`` (the
    parameters of ``nn.Dense`` / ``nn.DenseGeneral``)."""
    return partial(LoRADense, rank=rank, alpha=alpha, dtype=dtype)


def smear_keys(k: jax.Array, mix: jax.Array, before: jax.Array | None = None) -> jax.Array:
    """Smeared keys (Olsson et al., 2022): ``k̃_j = m_h k_j + (1 − m_h) k_{j−1}`` with ``k_{−1} = 0``
    (or ``before``: the key of the position before the window, when a cache carries it).

    ``k`` is ``[B, T, H, D]``, ``mix`` ``[H]`` in (0, 1), ``before`` ``[B, H, D]``. Causal: k̃_j depends
    on positions ≤ j only. A query then matches position j on the content of j − 1, so a single head
    can do what an induction circuit otherwise needs a previous-token head in an earlier layer for.
    """
    if before is None:
        prev = jnp.pad(k, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]
    else:
        prev = jnp.concatenate([before[:, None].astype(k.dtype), k[:, :-1]], axis=1)
    m = mix.astype(k.dtype)[:, None]
    return m * k + (1.0 - m) * prev


def init_cache(batch: int, length: int, n_heads: int, head_dim: int) -> dict[str, jax.Array]:
    """An empty key/value cache of one attention layer (every leaf batch-first, no slot valid):
    ``k, v [B, M, H, D]`` (keys after RoPE and smearing, rotated to positions −M … −1 of the next
    window), ``valid [B, M]`` and ``prev_key [B, H, D]`` (the raw key of position −1, which the
    next window's first key is smeared with)."""
    return {
        "k": jnp.zeros((batch, length, n_heads, head_dim), jnp.float32),
        "v": jnp.zeros((batch, length, n_heads, head_dim), jnp.float32),
        "valid": jnp.zeros((batch, length), bool),
        "prev_key": jnp.zeros((batch, n_heads, head_dim), jnp.float32),
    }


def _last(x: jax.Array, m: int) -> jax.Array:
    """The last ``m`` time steps (axis 1) of ``x`` (none for ``m = 0``)."""
    return x[:, x.shape[1] - m :]


class SelfAttention(nn.Module):
    """Multi-head self-attention ``W_o · attend(RoPE(x W_q), RoPE(x W_k), x W_v)``.

    ``attend(q, k, v)`` picks the pattern: dense causal by default, or e.g. a sliding window, a
    masked or a spiral sparse pattern (bind extra arguments such as a key mask with ``partial``).
    ``smear``: keys (after RoPE) are smeared with the previous position's key by a learned per-head
    ``m_h = σ(w_h)``, ``w_h`` initialised to 0 (see :func:`smear_keys`). ``dense``: factory of the
    ``qkv`` ``[d → 3, H, D]`` and ``out`` ``[H, D → d]`` projections (default: plain, no adapter).

    With ``cache`` (:func:`init_cache`, Transformer-XL): the window's queries attend the cached keys
    and their own, ``attend(q, [k_cache; k], [v_cache; v], key_valid=[valid; key_valid])`` (queries =
    the last T keys), and the call returns ``(out, new_cache)``: the last M keys/values of cache +
    window. Positions are window-relative (queries and keys at 0 … T−1) and the new cache's keys are
    rotated by −T, so a cached key keeps its offset to later queries (RoPE scores depend only on the
    position difference); the window's first key is smeared with the carried ``prev_key``.
    ``key_valid [B, T]``: which keys of the window may be attended (default all).
    """

    n_heads: int
    dtype: Any = jnp.float32
    rope: bool = True
    attend: AttentionFn | None = None
    smear: bool = False
    dense: DenseFactory | None = None

    @nn.compact
    def __call__(self, x: jax.Array, cache: dict[str, jax.Array] | None = None, key_valid: jax.Array | None = None):
        b, t, d = x.shape
        head_dim = d // self.n_heads
        dense = self.dense or lora_dense(dtype=self.dtype)
        qkv = dense((3, self.n_heads, head_dim), name="qkv")(x)
        # queries and keys in float32 whatever the compute dtype: the scores and their softmax stay
        # float32 (spiraljax.nn.precision); a no-op for float32
        q, k, v = qkv[:, :, 0].astype(jnp.float32), qkv[:, :, 1].astype(jnp.float32), qkv[:, :, 2]
        if self.rope:
            pos = jnp.arange(t)
            q, k = apply_rope(q, pos), apply_rope(k, pos)
        raw_k = k
        if self.smear:
            k = smear_keys(
                k,
                nn.sigmoid(self.param("smear", nn.initializers.zeros, (self.n_heads,))),
                None if cache is None else cache["prev_key"],
            )
        attend = self.attend or causal_attention
        if cache is None:
            return dense(d, axis=(-2, -1), name="out")(attend(q, k, v))
        m = cache["k"].shape[1]
        window_valid = jnp.ones((b, t), bool) if key_valid is None else key_valid
        k_all = jnp.concatenate([cache["k"], k], axis=1)
        v_all = jnp.concatenate([cache["v"].astype(v.dtype), v], axis=1)
        valid_all = jnp.concatenate([cache["valid"], window_valid], axis=1)
        out = attend(q, k_all, v_all, key_valid=valid_all)
        new_k, prev_key = _last(k_all, m), raw_k[:, -1:]
        if self.rope:  # to positions −M … −1 of the next window
            new_k, prev_key = apply_rope(new_k, jnp.full((m,), -t)), apply_rope(prev_key, jnp.full((1,), -t))
        new_cache = {
            "k": new_k,
            "v": _last(v_all, m).astype(jnp.float32),
            "valid": _last(valid_all, m),
            "prev_key": prev_key[:, 0],
        }
        return dense(d, axis=(-2, -1), name="out")(out), new_cache


class MLP(nn.Module):
    """Position-wise MLP, layers ``gate``, ``up``, ``down``: SwiGLU ``W_down (silu(W_gate x) ⊙ W_up x)``
    or GELU ``W_down gelu(W_up x)`` (each ``+ b`` with ``use_bias``).

    ``draws_as``: a prefix ``p``; each layer then draws its initial values with the keys Flax gives
    a layer named ``p + name`` beside this module. The Spiralformer and the Hebbian LM pass ``"mlp_"``:
    in version 0.1.0 their MLP layers were the block's ``mlp_up`` / ``mlp_down``, and Flax keys a
    layer's initial draw by its path, so this keeps their initial weights, and every number trained
    from them, as they were (tests/test_mlp_names.py).
    """

    hidden: int
    kind: str = "swiglu"
    dtype: Any = jnp.float32
    dense: DenseFactory | None = None
    use_bias: bool = False
    draws_as: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dense = self.dense or lora_dense(dtype=self.dtype)

        def layer(features: int, name: str) -> nn.Module:
            extra = {}
            if self.draws_as is not None and self.is_initializing():
                extra["draws_from"] = LazyRng.create(self.scope.parent.rngs["params"], self.draws_as + name)
            return dense(features, use_bias=self.use_bias, name=name, **extra)

        if self.kind == "swiglu":
            h = nn.silu(layer(self.hidden, "gate")(x)) * layer(self.hidden, "up")(x)
        elif self.kind == "gelu":
            h = nn.gelu(layer(self.hidden, "up")(x))
        else:
            raise ValueError(f"mlp kind {self.kind!r}: expected 'swiglu' or 'gelu'")
        return layer(x.shape[-1], "down")(h)


class Block(nn.Module):
    """Pre-norm block: ``x + Attn(LN x)``, then ``x + MLP(LN x)`` (dropout on both branches).

    With a low-precision ``dtype`` the branches compute in it and their outputs are added to ``x`` in
    ``x``'s dtype (a float32 residual stream stays float32). ``train`` may be passed positionally
    (``nn.remat(Block, static_argnums=(2,))`` needs it so). With ``cache`` (a layer cache of
    :func:`init_cache`) the call returns ``(x, new_cache)`` (:class:`SelfAttention`).
    """

    n_heads: int
    mlp_hidden: int
    mlp_kind: str = "swiglu"
    dropout: float = 0.0
    dtype: Any = jnp.float32
    attend: AttentionFn | None = None
    smear: bool = False
    dense: DenseFactory | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, cache: dict[str, jax.Array] | None = None):
        drop = nn.Dropout(self.dropout, deterministic=not train)
        h = SelfAttention(
            self.n_heads, self.dtype, attend=self.attend, smear=self.smear, dense=self.dense, name="attn"
        )(nn.LayerNorm(dtype=self.dtype)(x), cache)
        if cache is not None:
            h, cache = h
        x = x + drop(h)
        h = MLP(self.mlp_hidden, self.mlp_kind, self.dtype, dense=self.dense, name="mlp")(
            nn.LayerNorm(dtype=self.dtype)(x)
        )
        x = x + drop(h)
        return x if cache is None else (x, cache)
