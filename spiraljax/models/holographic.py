"""Holographic associative memory in Cl(3,1) — pure, jit-compiled functions over a state pytree.

* learn:    M[slot(ctx), lane] += φ⁻¹ · C(ctx) · E(target)      (C = ordered product of embeddings)
* retrieve: scores_v = ⟨C⁻¹ M, E(v)⟩_F, argmax and confidence (softmax of the scores)

Stores (arrays, no Python dict): an *exact* store keyed by a hash of the whole context and, for the
``general`` mode, back-off stores keyed by the context's prefix (drop the last token) and suffix
(drop the first) — a superposition that can answer contexts never seen whole. Each slot has
``lanes`` phase lanes: a target that contradicts what a context already holds goes to the next lane
(paradox resolution), so both stay retrievable (``retrieve_all``).

``dream`` alternates non-REM (slots whose retrieval is dissonant get an extra Grace step of weight
φ⁻⁴, consonant ones are the witnesses left untouched) and REM (seeded jitter × 2πφ⁻¹ of the satellite
phases), and wakes when stability > φ⁻² or after ⌈φ⁵⌉ = 11 iterations.
"""
from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
from pydantic import Field

from spiraljax.config import ModelConfig, register_model_config
from spiraljax.ops.clifford import PHI, context_product, grace, token_embeddings
from spiraljax.ops.toroidal import N_SATELLITES

MAX_DREAM_ITERS = math.ceil(PHI ** 5)  # 11


@register_model_config("holographic")
class HolographicConfig(ModelConfig):
    family: Literal["holographic"] = "holographic"
    vocab_size: int = Field(256, gt=1)
    seq_len: int = Field(64, gt=1)
    d_model: int = 16
    n_heads: int = 1
    n_layers: int = 1
    context_len: int = Field(3, ge=2)
    capacity: int = Field(65536, gt=0)       # slots per store (hash table size)
    lanes: int = Field(4, gt=0)              # phase lanes for paradoxical targets
    mode: Literal["exact", "general"] = "general"
    seed: int = 0


State = dict[str, jax.Array]
_MULT = jnp.uint32(2654435761)


def _hash(tokens: jax.Array, salt: int, capacity: int) -> jax.Array:
    """Polynomial hash of ``tokens [..., n]`` into ``[0, capacity)`` (salt separates the stores)."""
    h = jnp.full(tokens.shape[:-1], jnp.uint32(2166136261 + salt))
    for i in range(tokens.shape[-1]):
        h = (h ^ tokens[..., i].astype(jnp.uint32)) * _MULT
    return (h % jnp.uint32(capacity)).astype(jnp.int32)


def init(cfg: HolographicConfig) -> State:
    n_stores = 1 if cfg.mode == "exact" else 3
    return {"memory": jnp.zeros((n_stores, cfg.capacity, cfg.lanes, 4, 4), jnp.float32),
            "lane_target": jnp.full((n_stores, cfg.capacity, cfg.lanes), -1, jnp.int32),
            "fingerprint": jnp.full((cfg.capacity,), -1, jnp.int32),   # which context owns an exact slot
            "embed": token_embeddings(cfg.vocab_size, cfg.seed),
            "satellite_offsets": jnp.zeros((N_SATELLITES,), jnp.float32)}


def _views(contexts: jax.Array, n_stores: int) -> list[jax.Array]:
    """Token views per store: the whole context, its prefix, its suffix."""
    return [contexts, contexts[..., :-1], contexts[..., 1:]][:n_stores]


def learn(state: State, contexts: jax.Array, targets: jax.Array, capacity: int) -> State:
    """Store ``contexts [B, n] → targets [B]`` in every store, in one vectorised scatter-add."""
    emb = state["embed"]
    memory, lane_target = state["memory"], state["lane_target"]
    n_stores = memory.shape[0]
    for s, view in enumerate(_views(contexts, n_stores)):
        slot = _hash(view, s, capacity)
        held = lane_target[s, slot]                                   # [B, L]
        same = held == targets[:, None]
        free = held < 0
        # lane: the one already holding this target, else the first free lane, else the last lane
        lane = jnp.where(same.any(-1), jnp.argmax(same, -1),
                         jnp.where(free.any(-1), jnp.argmax(free, -1), memory.shape[2] - 1))
        write = PHI ** -1 * context_product(emb, view) @ emb[targets]
        memory = memory.at[s, slot, lane].add(write)
        lane_target = lane_target.at[s, slot, lane].set(jnp.where(held[jnp.arange(len(lane)), lane] < 0, targets,
                                                                  held[jnp.arange(len(lane)), lane]))
    fingerprint = state["fingerprint"].at[_hash(contexts, 0, capacity)].set(_hash(contexts, 99, 2 ** 31 - 1))
    return {**state, "memory": memory, "lane_target": lane_target, "fingerprint": fingerprint}


def _known(state: State, contexts: jax.Array, capacity: int) -> jax.Array:
    """True where the exact store holds this very context (not a hash collision)."""
    return state["fingerprint"][_hash(contexts, 0, capacity)] == _hash(contexts, 99, 2 ** 31 - 1)


def _best_scores(state: State, contexts: jax.Array, capacity: int) -> jax.Array:
    """``[B, V]``: the exact store's strongest lane if it knows the context, else (general mode) the
    superposition of the prefix and suffix stores."""
    scores = _lane_scores(state, contexts, capacity)                   # [S, B, L, V]
    best = scores[0].max(axis=1)
    if scores.shape[0] > 1:
        backoff = scores[1].max(axis=1) + scores[2].max(axis=1)
        best = jnp.where(_known(state, contexts, capacity)[:, None], best, backoff)
    return best


def _lane_scores(state: State, contexts: jax.Array, capacity: int) -> jax.Array:
    """Scores ``[S, B, L, V]`` = ⟨C⁻¹ M_lane, E(v)⟩_F for every store, lane and vocab entry."""
    emb = state["embed"]
    out = []
    for s, view in enumerate(_views(contexts, state["memory"].shape[0])):
        c = context_product(emb, view)
        m = state["memory"][s, _hash(view, s, capacity)]                 # [B, L, 4, 4]
        unbound = jnp.einsum("bji,bljk->blik", c, m)   # Cᵀ M = C⁻¹ M (C orthogonal)
        out.append(jnp.einsum("blij,vij->blv", unbound, emb))
    return jnp.stack(out)


def retrieve(state: State, contexts: jax.Array, capacity: int, temperature: float = 0.25):
    """``(token [B], confidence [B])``: the exact store if it knows the context, else the back-off
    superposition of prefix and suffix stores (general mode)."""
    best = _best_scores(state, contexts, capacity)
    probs = jax.nn.softmax(best / temperature, axis=-1)
    token = jnp.argmax(best, axis=-1)
    return token, jnp.take_along_axis(probs, token[:, None], -1)[:, 0]


def retrieve_all(state: State, contexts: jax.Array, capacity: int):
    """Per-lane answers of the exact store: ``(tokens [B, L], strength [B, L])`` (paradox lanes)."""
    scores = _lane_scores(state, contexts, capacity)[0]
    return jnp.argmax(scores, -1), jnp.max(scores, -1)


def _consonance(state: State) -> jax.Array:
    """Per lane: the share of its energy that survives the Grace operator, ‖Grace(M)‖² / ‖M‖² ∈ (0, 1].

    A lane dominated by low grades (what Grace preserves) is consonant; cross-talk spread over high
    grades is dissonant."""
    m = state["memory"]
    energy = jnp.sum(m ** 2, axis=(-1, -2))
    graced = jnp.sum(grace(m) ** 2, axis=(-1, -2))
    return jnp.where(energy > 0, graced / jnp.maximum(energy, 1e-12), 1.0)


def stability(state: State) -> jax.Array:
    """Mean consonance over the occupied lanes."""
    occupied = state["lane_target"] >= 0
    ratio = _consonance(state)
    return jnp.sum(jnp.where(occupied, ratio, 0.0)) / jnp.maximum(jnp.sum(occupied), 1)


def dream(state: State, key: jax.Array, max_iters: int = MAX_DREAM_ITERS):
    """Consolidate the memory; returns ``(state, {"iterations", "stability"})``."""
    threshold = PHI ** -2

    def body(carry):
        st, it, key, _ = carry
        key, sub = jax.random.split(key)
        ratio = _consonance(st)
        dissonant = (ratio < jnp.median(ratio)) & (st["lane_target"] >= 0)
        # non-REM: dissonant lanes get an extra Grace step weighted φ⁻⁴ (witnesses stay as they are)
        m = st["memory"]
        m = jnp.where(dissonant[..., None, None], (1 - PHI ** -4) * m + PHI ** -4 * grace(m), m)
        # REM: jitter the satellite phases by N(0, 1) × 2πφ⁻¹ (seeded)
        jitter = jax.random.normal(sub, st["satellite_offsets"].shape) * 2 * jnp.pi * PHI ** -1
        st = {**st, "memory": m, "satellite_offsets": st["satellite_offsets"] + jitter}
        return st, it + 1, key, stability(st)

    def cond(carry):
        _, it, _, stab = carry
        return (it < max_iters) & (stab <= threshold)

    st, iters, _, stab = jax.lax.while_loop(cond, body, (state, jnp.int32(0), key, stability(state)))
    return st, {"iterations": iters, "stability": stab}


def generate(state: State, prompt: jax.Array, n: int, key: jax.Array, capacity: int, temperature: float = 0.25):
    """Sample ``n`` tokens after ``prompt [B, ctx]`` by repeated retrieval → ``[B, ctx + n]``."""
    ctx_len = prompt.shape[1]

    def step(carry, k):
        window = carry
        best = _best_scores(state, window, capacity)
        tok = jax.random.categorical(k, best / temperature, axis=-1).astype(window.dtype)
        return jnp.concatenate([window[:, 1:], tok[:, None]], axis=1), tok

    _, toks = jax.lax.scan(step, prompt[:, -ctx_len:], jax.random.split(key, n))
    return jnp.concatenate([prompt, toks.T], axis=1)
