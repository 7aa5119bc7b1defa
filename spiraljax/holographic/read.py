"""Reading the memory: the own slot, the similarity read, and retrieval.

    retrieve: scores_v = ⟨C⁻¹ (M + D), E(v)⟩ over the slot's lanes, argmax and confidence
              (D: the consolidation a dream writes; zero until the first dream)

Modes: ``exact`` reads only the context's own slot. ``general`` (the generalising memory) reads the own
slot when the registry holds the context and otherwise attends over stored contexts by geometric
similarity:

    sim(q, s) = Σ_i w_i k(cos Δ_i),   cos Δ_i = ⟨E(q_i)† E(s_i)⟩₀ / 4,   k(c) = ((1 + c)/2)^φ⁴

— the toroidal phase kernel (1 + cos Δ)/2 on the angle between the position-i multivectors, sharpened by
φ⁴: a shared token gives 1, a different one ≈ 0.04, so "closer" means "shares more positions", at any
position. w_i = φ^(−recency·(n−1−i)): uniform by default; ``recency`` > 0 favours the recent positions
(on text the last characters predict the next one best). The read is the softmax(φ⁴·sim)-weighted sum
of the ``neighbours`` most similar stored bindings' own reads. Cost per query: O(n·registry) — per
position a gather from the V×V kernel table (or a ``[16] × [16, registry]`` product for large
vocabularies) — plus a top-k. The memory shares only this kernel with ``ops.toroidal.toroidal_attention``,
which is a standalone sequence op (a context has no sequence to attend over).

``backoff`` is the previous generalisation (prefix and suffix stores superposed when the whole context is
unknown), kept as a baseline: it cannot answer a change in the middle of a context.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from spiraljax.holographic.store import SIMILARITY_POWER, State, lookup, store_views, token_hash
from spiraljax.ops.clifford import context_product, position_cosines
from spiraljax.ops.toroidal import phase_kernel

NEIGHBOURS = 8  # stored bindings the similarity read attends to
QUERY_CHUNK = 1024  # queries per similarity block in similarity_read


def _trace(state: State) -> jax.Array:
    """What retrieval reads from the exact store: the trace plus the dream's consolidation."""
    return state["memory"][0] + state["consolidation"]


def _lane_scores(state: State, contexts: jax.Array, capacity: int) -> jax.Array:
    """Scores ``[S, B, L, V]`` = ⟨C⁻¹ M_lane, E(v)⟩_F for every store, lane and vocab entry."""
    emb = state["embed"]
    out = []
    for s, view in enumerate(store_views(contexts, state["memory"].shape[0])):
        c = context_product(emb, view)
        m = (_trace(state) if s == 0 else state["memory"][s])[token_hash(view, s, capacity)]  # [B, L, 4, 4]
        unbound = jnp.einsum("bji,bljk->blik", c, m)  # Cᵀ M = C⁻¹ M (C orthogonal)
        out.append(jnp.einsum("blij,vij->blv", unbound, emb))
    return jnp.stack(out)


def kernel_columns(state: State, power: float = SIMILARITY_POWER) -> list[jax.Array] | None:
    """Per context position, the ``[V, registry]`` columns of the token kernel table ``state["kernel"]`` at
    the registered tokens; None when there is no table (vocabulary above ``KERNEL_TABLE_MAX``) or
    ``power`` is not the table's."""
    if not (state["kernel"].size and power == SIMILARITY_POWER):
        return None
    stored = jnp.maximum(state["ep_ctx"], 0)
    return [state["kernel"][:, stored[:, i]] for i in range(stored.shape[1])]


def similarity(
    state: State, contexts: jax.Array, power: float = SIMILARITY_POWER, columns: list[jax.Array] | None = None
) -> jax.Array:
    """``[B, registry]``: Σ_i w_i ((1 + cos Δ_i)/2)^power between each context and each registered one
    (−inf for empty registry rows); w_i = φ^(−recency·(n−1−i)) (``state["position_weights"]``).
    For vocabularies up to ``KERNEL_TABLE_MAX`` the kernel is read from the ``[V, V]`` token table
    ``state["kernel"]`` (a gather per position); otherwise (or for another ``power``) one matmul per
    position (:func:`similarity_reference`, equal). ``columns``: :func:`kernel_columns`, when the caller
    reads many blocks of queries against one registry."""
    w = state["position_weights"]
    columns = kernel_columns(state, power) if columns is None else columns
    if columns is not None:
        # columns of the registry first ([V, registry] per position), then one row per query: on CPU this
        # order keeps the gather vectorised when top-k follows (the other order ran ~25× slower)
        sim = sum(w[i] * columns[i][contexts[:, i]] for i in range(contexts.shape[-1]))
    else:
        sim = similarity_reference(state["embed"], contexts, jnp.maximum(state["ep_ctx"], 0), power, w)
    return jnp.where(state["ep_weight"] > 0, sim, -jnp.inf)


def similarity_reference(
    emb: jax.Array,
    contexts: jax.Array,
    stored: jax.Array,
    power: float = SIMILARITY_POWER,
    weights: jax.Array | None = None,
) -> jax.Array:
    """Σ_i w_i · phase_kernel(cos Δ_i)^power from the position-wise multivector cosines (matmuls)."""
    w = jnp.ones(contexts.shape[-1]) if weights is None else weights
    return sum(
        w[i] * phase_kernel(position_cosines(emb, contexts[:, i : i + 1], stored[:, i : i + 1])[..., 0], power)
        for i in range(contexts.shape[-1])
    )  # position by position: no [B, E, n] array


def similarity_read(
    state: State, contexts: jax.Array, capacity: int, neighbours: int = NEIGHBOURS, power: float = SIMILARITY_POWER
) -> tuple[jax.Array, jax.Array]:
    """Attention over stored bindings: ``(scores [B, V], known [B])`` where scores = Σ_k a_k·read_k over
    the ``neighbours`` most similar registered bindings, a = softmax(φ⁴·sim), read_k = ⟨C_k⁻¹ M[slot_k,
    lane_k], E(v)⟩; ``known``: the registry holds this very context. Queries go through
    ``jax.lax.map`` in batches of ``QUERY_CHUNK`` (a ``[chunk, registry]`` similarity block at a time), so
    memory stays bounded."""
    emb = state["embed"]
    k = min(neighbours, state["ep_ctx"].shape[0])
    columns = kernel_columns(state, power)  # once per call: inside the map each batch re-gathered them (~2× slower)

    def one(context: jax.Array) -> tuple[jax.Array, jax.Array]:  # context [n]
        # top-k of a [registry] vector: vmapped, XLA runs it on [chunk, registry] (a [chunk, 1, registry]
        # operand ran ~2× slower on CPU)
        sim, rows = jax.lax.top_k(similarity(state, context[None], power, columns)[0], k)
        ctx = jnp.maximum(state["ep_ctx"][rows], 0)  # [K, n]
        c = context_product(emb, ctx)
        m = _trace(state)[token_hash(ctx, 0, capacity), state["ep_lane"][rows]]  # [K, 4, 4]
        reads = jnp.einsum("kij,vij->kv", jnp.einsum("kji,kjl->kil", c, m), emb)
        valid = jnp.isfinite(sim)
        attn = jax.nn.softmax(jnp.where(valid, SIMILARITY_POWER * sim, -jnp.inf), axis=-1)
        attn = jnp.where(valid, attn, 0.0)
        known = ((ctx == context).all(-1) & valid).any() | _known(state, context[None], capacity)[0]
        return jnp.einsum("k,kv->v", attn, reads), known

    return jax.lax.map(one, contexts, batch_size=QUERY_CHUNK)


def best_scores(state: State, contexts: jax.Array, capacity: int) -> jax.Array:
    """``[B, V]``: the exact store's strongest lane; for a context the memory does not know, the
    similarity read (general mode) or the prefix + suffix superposition (backoff mode)."""
    scores = _lane_scores(state, contexts, capacity)  # [S, B, L, V]
    best = scores[0].max(axis=1)
    if state["generalise"].shape[0]:
        known, own = registered(state, contexts, capacity), best
        best = jax.lax.cond(
            known.all(),
            lambda: own,  # every context stored: no search
            lambda: jnp.where(known[:, None], own, similarity_read(state, contexts, capacity)[0]),
        )
    elif scores.shape[0] > 1:
        backoff = scores[1].max(axis=1) + scores[2].max(axis=1)
        best = jnp.where(_known(state, contexts, capacity)[:, None], best, backoff)
    return best


def registered(state: State, contexts: jax.Array, capacity: int) -> jax.Array:
    """True where the registry holds a binding of this very context (in any lane) or the exact slot was
    last written by it."""
    hit = _known(state, contexts, capacity)
    for lane in range(state["lane_target"].shape[-1]):
        hit = hit | (lookup(state, contexts, jnp.full(contexts.shape[:-1], lane, jnp.int32)) >= 0)
    return hit


def _known(state: State, contexts: jax.Array, capacity: int) -> jax.Array:
    """True where the exact store's slot was last written by this very context."""
    return state["fingerprint"][token_hash(contexts, 0, capacity)] == token_hash(contexts, 99, 2**31 - 1)


def retrieve(state: State, contexts: jax.Array, capacity: int, temperature: float = 0.25):
    """``(token [B], confidence [B])`` from :func:`best_scores` (confidence: softmax of the scores)."""
    best = best_scores(state, contexts, capacity)
    probs = jax.nn.softmax(best / temperature, axis=-1)
    token = jnp.argmax(best, axis=-1)
    return token, jnp.take_along_axis(probs, token[:, None], -1)[:, 0]


def retrieve_all(state: State, contexts: jax.Array, capacity: int):
    """Per-lane answers of the exact store: ``(tokens [B, L], strength [B, L])`` (paradox lanes)."""
    scores = _lane_scores(state, contexts, capacity)[0]
    return jnp.argmax(scores, -1), jnp.max(scores, -1)
