"""Holographic associative memory in Cl(3,1) — pure, jit-compiled functions over a state pytree.

* learn:    M[slot(ctx), lane] += φ⁻¹ · C(ctx) · E(target)      (C = ordered product of embeddings)
* retrieve: scores_v = ⟨C⁻¹ (M + D), E(v)⟩ over the slot's lanes, argmax and confidence
            (D: the consolidation a dream writes; zero until the first dream)

Stores (arrays, no Python dict):

* the **trace** M ``[stores, capacity, lanes, 4, 4]``: a hash table of superposed bindings. Each slot has
  ``lanes`` phase lanes: a target that contradicts what a slot already holds goes to the next free lane
  (paradox resolution), so both stay retrievable (``retrieve_all``). ``learn`` on a batch assigns lanes
  exactly as learning the items one at a time would (``learn_reference``).
* the **registry** of bindings (context, lane, number of writes) — the stored contexts, not their targets —
  with an open-addressed index (``INDEX_PROBES`` cells, 4× the rows) to find a binding. It is what the
  similarity read attends over and what a dream replays. Bindings beyond ``episodes`` rows are not
  registered (the suite reports a full registry).

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

``dream`` replays the registry. Its trace of a slot lane is an exact sum Σ_j w_j φ⁻¹ C_j E(a_j) of the
registered bindings, so their answers a_j can be decoded jointly even where the one-shot read suffers
cross-talk (an overloaded store):

* non-REM: greedy coordinate descent on the unexplained energy ‖M − Σ_j w_j φ⁻¹ C_j E(a_j)‖² (per slot
  lane, the binding whose relabelling lowers it most is relabelled; ⌈φ⁴⌉ = 7 steps per phase);
* REM: a seeded kick — a share φ⁻² of the bindings jump to the argmax of their read jittered by
  N(0, 1)·2πφ⁻¹·(its spread) — then non-REM settles; a lane keeps the kicked answers only where its
  unexplained energy fell (the kick escapes local minima of the descent);
* wake when an iteration changes no answer or after ⌈φ⁵⌉ = 12 iterations (φ⁵ ≈ 11.09);
* re-binding: a margin perceptron writes the consolidation D so that the one-shot read returns the
  decoded answers (margin φ⁻¹, rate φ⁻³, ``REBIND_EPOCHS`` passes; contexts with several lanes, i.e.
  paradoxes, are left alone). The trace itself is never rewritten, so later dreams decode it again.

``stability`` is the share of the trace's energy that the decoded answers explain. Cost of a dream:
O(registry·V·16) per non-REM step and O(registry·lanes·V·16) per re-binding pass.
"""
from __future__ import annotations

import functools
import math
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import Field

from spiraljax.config import ModelConfig
from spiraljax.errors import ConfigError
from spiraljax.ops.clifford import PHI, context_product, position_cosines, token_embeddings
from spiraljax.ops.toroidal import phase_kernel

MAX_DREAM_ITERS = math.ceil(PHI ** 5)   # 12 (φ⁵ ≈ 11.09)
NREM_STEPS = math.ceil(PHI ** 4)        # 7 greedy relabelling steps per non-REM phase
REM_KICK = PHI ** -2                     # share of bindings kicked per REM phase
REM_JITTER = 2 * math.pi / PHI           # jitter scale (× the spread of a binding's read)
REBIND_EPOCHS = math.ceil(PHI ** 8)     # 47 perceptron passes over the registry
REBIND_RATE = PHI ** -3
REBIND_MARGIN = PHI ** -1
SIMILARITY_POWER = PHI ** 4              # sharpening of the phase kernel and of the attention softmax


class HolographicConfig(ModelConfig):
    """Not a Flax model: :func:`init` / :func:`learn` / :func:`retrieve` over a state pytree, evaluated by
    ``python evaluate.py --suite holographic``."""

    family: Literal["holographic"] = "holographic"
    # what saved configs from before the per-family split carry (this family had its own defaults)
    RETIRED: ClassVar[dict[str, Any]] = {"d_model": 16, "n_layers": 1, "n_heads": 1, "dropout": 0.0,
                                         "dtype": "float32"}
    vocab_size: int = Field(256, gt=1, description="number of token ids (each gets a Cl(3,1) embedding)")
    seq_len: int = Field(64, gt=1, description="window length of the data pipeline (the memory reads "
                                               "context_len tokens)")
    context_len: int = Field(3, ge=2, description="tokens of context bound to each target")
    capacity: int = Field(65536, gt=0, description="slots per store (hash table size)")
    lanes: int = Field(4, gt=0, description="phase lanes per slot for paradoxical targets")
    episodes: int = Field(32768, gt=0, description="registry size: distinct (context, lane) bindings remembered")
    recency: float = Field(0.0, ge=0.0, description="similarity weight of position i: φ^(−recency·(n−1−i)); "
                                                    "0 = uniform")
    mode: Literal["exact", "general", "backoff"] = Field("general", description="read the own slot only, "
                                                                               "generalise by similarity, or "
                                                                               "prefix/suffix back-off")
    seed: int = Field(0, description="seed of the token embeddings")

    def build(self):
        raise ConfigError("model.family 'holographic' has no Flax model to train: evaluate it with "
                          "python evaluate.py --suite holographic --config configs/holographic.yaml")


State = dict[str, jax.Array]
_MULT = jnp.uint32(2654435761)
NEIGHBOURS = 8                            # stored bindings the similarity read attends to
INDEX_PROBES = 8                          # open-addressing probes of the registry index (4× the registry)
QUERY_CHUNK = 1024                        # queries per similarity block in similarity_read
KERNEL_TABLE_MAX = 4096                   # vocab sizes up to this read the similarity kernel from a V×V table


def _hash(tokens: jax.Array, salt: int, capacity: int) -> jax.Array:
    """Polynomial hash of ``tokens [..., n]`` into ``[0, capacity)`` (salt separates the stores)."""
    h = jnp.full(tokens.shape[:-1], jnp.uint32(2166136261 + salt))
    for i in range(tokens.shape[-1]):
        h = (h ^ tokens[..., i].astype(jnp.uint32)) * _MULT
    return (h % jnp.uint32(capacity)).astype(jnp.int32)


def init(cfg: HolographicConfig) -> State:
    """Empty memory. The mode is carried by array shapes (so jitted functions branch statically):
    ``backoff`` has 3 stores, ``general`` a length-1 ``generalise`` flag array."""
    n_stores = 3 if cfg.mode == "backoff" else 1
    n = cfg.context_len
    emb = token_embeddings(cfg.vocab_size, cfg.seed)
    return {"memory": jnp.zeros((n_stores, cfg.capacity, cfg.lanes, 4, 4), jnp.float32),
            "lane_target": jnp.full((n_stores, cfg.capacity, cfg.lanes), -1, jnp.int32),
            "consolidation": jnp.zeros((cfg.capacity, cfg.lanes, 4, 4), jnp.float32),
            "fingerprint": jnp.full((cfg.capacity,), -1, jnp.int32),   # which context owns an exact slot
            "embed": emb,
            "kernel": token_kernel(emb) if cfg.vocab_size <= KERNEL_TABLE_MAX else jnp.zeros((0, 0), jnp.float32),
            "ep_ctx": jnp.full((cfg.episodes, n), -1, jnp.int32),
            "ep_lane": jnp.zeros((cfg.episodes,), jnp.int32),
            "ep_weight": jnp.zeros((cfg.episodes,), jnp.float32),
            "ep_count": jnp.zeros((), jnp.int32),
            "ep_index": jnp.full((4 * cfg.episodes,), -1, jnp.int32),  # hash(context, lane) → registry row
            "position_weights": PHI ** (-cfg.recency * jnp.arange(n - 1, -1, -1, dtype=jnp.float32)),
            "generalise": jnp.zeros((1 if cfg.mode == "general" else 0,), jnp.float32)}


def _views(contexts: jax.Array, n_stores: int) -> list[jax.Array]:
    """Token views per store: the whole context, its prefix, its suffix."""
    return [contexts, contexts[..., :-1], contexts[..., 1:]][:n_stores]


def _sorted_groups(keys: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Order of the rows sorted by the key tuple (then by row index) and, in that order, where a new
    key tuple starts."""
    idx = jnp.arange(keys[0].shape[0])
    order = jnp.lexsort((idx, *reversed(keys)))             # keys[0] is the primary key
    starts = jnp.zeros(idx.shape, bool).at[0].set(True)
    for k in keys:
        ks = k[order]
        starts = starts.at[1:].set(starts[1:] | (ks[1:] != ks[:-1]))
    return order, starts


def _first_occurrence(keys: list[jax.Array]) -> jax.Array:
    """For every row, the index of the first row with the same key tuple."""
    order, starts = _sorted_groups(keys)
    idx = jnp.arange(order.shape[0])
    first_sorted = order[jax.lax.cummax(jnp.where(starts, idx, 0))]
    return jnp.zeros_like(order).at[order].set(first_sorted)


def _rank_in_group(group: jax.Array, flag: jax.Array) -> jax.Array:
    """For every row: how many flagged rows of the same group come before it (by row index)."""
    order, starts = _sorted_groups([group])
    f = flag[order].astype(jnp.int32)
    before = jnp.cumsum(f) - f
    base = before[jax.lax.cummax(jnp.where(starts, jnp.arange(order.shape[0]), 0))]
    return jnp.zeros_like(order).at[order].set(before - base)


def _assign_lanes(held: jax.Array, slot: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Lanes as sequential learning would pick them: the lane already holding the target, else the
    next free lane (in order of the targets' first appearance in the batch), else the last lane.
    ``held [B, L]`` is the slot's lane targets before the batch. Returns ``(lane [B], claims [B])``."""
    idx = jnp.arange(targets.shape[0])
    same = held == targets[:, None]
    has = same.any(-1)
    first = _first_occurrence([slot, targets])
    new_rep = (first == idx) & ~has                  # first appearance of a target the slot lacks
    rank = _rank_in_group(slot, new_rep)[first]
    free = held < 0
    kth_free = jnp.argmax(free & (jnp.cumsum(free, -1) - 1 == rank[:, None]), -1)
    fits = rank < free.sum(-1)
    lane = jnp.where(has, jnp.argmax(same, -1), jnp.where(fits, kth_free, held.shape[-1] - 1))
    return lane, new_rep & fits


def _lookup(state: State, contexts: jax.Array, lane: jax.Array) -> jax.Array:
    """Registry row of each (context, lane) binding, −1 when absent: the index is open-addressed, a
    binding sits in one of ``INDEX_PROBES`` consecutive cells from its hash, verified by equality."""
    size = state["ep_index"].shape[0]
    h = _hash(jnp.concatenate([contexts, lane[:, None]], -1), 11, size)
    found = jnp.full(contexts.shape[:-1], -1, jnp.int32)
    for p in range(INDEX_PROBES):
        cand = state["ep_index"][(h + p) % size]
        safe = jnp.maximum(cand, 0)
        hit = (cand >= 0) & (state["ep_ctx"][safe] == contexts).all(-1) & (state["ep_lane"][safe] == lane)
        found = jnp.where((found < 0) & hit, cand, found)
    return found


def _register(state: State, contexts: jax.Array, lane: jax.Array) -> State:
    """Count one write of each (context, lane) binding in the registry, adding the new ones (a new row
    takes the first free index cell among its probes; several new rows aiming at one cell: lowest row
    wins, the others try the next cell)."""
    rows, size = state["ep_ctx"].shape[0], state["ep_index"].shape[0]
    idx = jnp.arange(contexts.shape[0])
    found = _lookup(state, contexts, lane)
    first = _first_occurrence([contexts[:, i] for i in range(contexts.shape[1])] + [lane])
    new_rep = (first == idx) & (found < 0)
    new_row = state["ep_count"] + jnp.cumsum(new_rep) - new_rep
    row = jnp.where(found >= 0, found, new_row[first])
    write_at = jnp.where(new_rep, new_row, rows)                       # out of range → dropped
    index = state["ep_index"]
    h = _hash(jnp.concatenate([contexts, lane[:, None]], -1), 11, size)
    placed = ~(new_rep & (new_row < rows))
    for p in range(INDEX_PROBES):
        cell = (h + p) % size
        want = ~placed & (index[cell] < 0)
        claim = jnp.full((size,), rows, jnp.int32).at[jnp.where(want, cell, size)].min(new_row, mode="drop")
        won = want & (claim[cell] == new_row)
        index = index.at[jnp.where(won, cell, size)].set(new_row, mode="drop")
        placed = placed | won
    return {**state,
            "ep_ctx": state["ep_ctx"].at[write_at].set(contexts, mode="drop"),
            "ep_lane": state["ep_lane"].at[write_at].set(lane, mode="drop"),
            "ep_index": index,
            "ep_weight": state["ep_weight"].at[row].add(1.0, mode="drop"),
            "ep_count": jnp.minimum(state["ep_count"] + new_rep.sum(), rows)}


def learn(state: State, contexts: jax.Array, targets: jax.Array, capacity: int) -> State:
    """Store ``contexts [B, n] → targets [B]`` in every store and the registry, in one vectorised call
    (same result as learning the items one at a time, ``learn_reference``)."""
    emb = state["embed"]
    memory, lane_target = state["memory"], state["lane_target"]
    lanes0 = None
    for s, view in enumerate(_views(contexts, memory.shape[0])):
        slot = _hash(view, s, capacity)
        lane, claims = _assign_lanes(lane_target[s, slot], slot, targets)
        memory = memory.at[s, slot, lane].add(PHI ** -1 * context_product(emb, view) @ emb[targets])
        lane_target = lane_target.at[s, jnp.where(claims, slot, capacity), lane].set(targets, mode="drop")
        lanes0 = lane if s == 0 else lanes0
    fingerprint = state["fingerprint"].at[_hash(contexts, 0, capacity)].set(_hash(contexts, 99, 2 ** 31 - 1))
    state = {**state, "memory": memory, "lane_target": lane_target, "fingerprint": fingerprint}
    return _register(state, contexts, lanes0)


def learn_reference(state: State, contexts, targets, capacity: int) -> State:
    """Reference for ``learn`` (plain Python over numpy, for tests): the items one at a time, each lane
    picked by the plain rule — the lane holding the target, else the first free lane (claimed), else
    the last lane — and the registry as a dict of (context, lane) → writes. Its registry index is not
    rebuilt: the returned state is for comparison, not for further learning."""
    contexts, targets = np.asarray(contexts), np.asarray(targets)
    emb = np.asarray(state["embed"], np.float64)
    memory = np.array(state["memory"], np.float64)
    lane_target = np.array(state["lane_target"])
    registry: dict[tuple, float] = {}
    for r in range(int(state["ep_count"])):
        key = (tuple(np.asarray(state["ep_ctx"][r]).tolist()), int(state["ep_lane"][r]))
        registry[key] = registry.get(key, 0.0) + float(state["ep_weight"][r])
    views = [np.asarray(v) for v in _views(jnp.asarray(contexts), memory.shape[0])]
    slots = [np.asarray(_hash(jnp.asarray(v), s, capacity)) for s, v in enumerate(views)]
    for i, t in enumerate(targets.tolist()):
        for s, view in enumerate(views):
            held = lane_target[s, slots[s][i]].tolist()
            if t in held:
                lane = held.index(t)
            elif -1 in held:
                lane = held.index(-1)
                lane_target[s, slots[s][i], lane] = t
            else:
                lane = len(held) - 1
            product = np.eye(4)
            for tok in view[i]:
                product = product @ emb[tok]
            memory[s, slots[s][i], lane] += PHI ** -1 * product @ emb[t]
            if s == 0:
                key = (tuple(contexts[i].tolist()), lane)
                registry[key] = registry.get(key, 0.0) + 1.0
    rows = len(registry)
    ep_ctx = np.full(state["ep_ctx"].shape, -1, np.int32)
    ep_lane, ep_weight = np.zeros(state["ep_lane"].shape, np.int32), np.zeros(state["ep_weight"].shape, np.float32)
    for r, ((c, lane), w) in enumerate(list(registry.items())[: ep_ctx.shape[0]]):
        ep_ctx[r], ep_lane[r], ep_weight[r] = c, lane, w
    fingerprint = state["fingerprint"].at[_hash(jnp.asarray(contexts), 0, capacity)].set(
        _hash(jnp.asarray(contexts), 99, 2 ** 31 - 1))
    return {**state, "memory": jnp.asarray(memory, jnp.float32), "lane_target": jnp.asarray(lane_target),
            "fingerprint": fingerprint, "ep_ctx": jnp.asarray(ep_ctx), "ep_lane": jnp.asarray(ep_lane),
            "ep_weight": jnp.asarray(ep_weight), "ep_count": jnp.int32(min(rows, ep_ctx.shape[0]))}


def _trace(state: State) -> jax.Array:
    """What retrieval reads from the exact store: the trace plus the dream's consolidation."""
    return state["memory"][0] + state["consolidation"]


def _lane_scores(state: State, contexts: jax.Array, capacity: int) -> jax.Array:
    """Scores ``[S, B, L, V]`` = ⟨C⁻¹ M_lane, E(v)⟩_F for every store, lane and vocab entry."""
    emb = state["embed"]
    out = []
    for s, view in enumerate(_views(contexts, state["memory"].shape[0])):
        c = context_product(emb, view)
        m = (_trace(state) if s == 0 else state["memory"][s])[_hash(view, s, capacity)]   # [B, L, 4, 4]
        unbound = jnp.einsum("bji,bljk->blik", c, m)   # Cᵀ M = C⁻¹ M (C orthogonal)
        out.append(jnp.einsum("blij,vij->blv", unbound, emb))
    return jnp.stack(out)


def token_kernel(emb: jax.Array, power: float = SIMILARITY_POWER) -> jax.Array:
    """``[V, V]``: ((1 + ⟨E(a)† E(b)⟩₀/4)/2)^power — the position kernel depends only on the token pair."""
    return phase_kernel(jnp.einsum("aij,bij->ab", emb, emb) / 4.0, power)


def similarity(state: State, contexts: jax.Array, power: float = SIMILARITY_POWER) -> jax.Array:
    """``[B, registry]``: Σ_i w_i ((1 + cos Δ_i)/2)^power between each context and each registered one
    (−inf for empty registry rows); w_i = φ^(−recency·(n−1−i)) (``state["position_weights"]``).
    For vocabularies up to ``KERNEL_TABLE_MAX`` the kernel is read from the ``[V, V]`` token table
    ``state["kernel"]`` (a gather per position); otherwise (or for another ``power``) one matmul per
    position (:func:`similarity_reference`, equal)."""
    stored = jnp.maximum(state["ep_ctx"], 0)
    w = state["position_weights"]
    if state["kernel"].size and power == SIMILARITY_POWER:
        # columns of the registry first ([V, registry] per position), then one row per query: on CPU this
        # order keeps the gather vectorised when top-k follows (the other order ran ~25× slower)
        table = state["kernel"]
        sim = sum(w[i] * table[:, stored[:, i]][contexts[:, i]] for i in range(contexts.shape[-1]))
    else:
        sim = similarity_reference(state["embed"], contexts, stored, power, w)
    return jnp.where(state["ep_weight"] > 0, sim, -jnp.inf)


def similarity_reference(emb: jax.Array, contexts: jax.Array, stored: jax.Array,
                         power: float = SIMILARITY_POWER, weights: jax.Array | None = None) -> jax.Array:
    """Σ_i w_i · phase_kernel(cos Δ_i)^power from the position-wise multivector cosines (matmuls)."""
    w = jnp.ones(contexts.shape[-1]) if weights is None else weights
    return sum(w[i] * phase_kernel(position_cosines(emb, contexts[:, i:i + 1], stored[:, i:i + 1])[..., 0], power)
               for i in range(contexts.shape[-1]))                  # position by position: no [B, E, n] array


def similarity_read(state: State, contexts: jax.Array, capacity: int, neighbours: int = NEIGHBOURS,
                    power: float = SIMILARITY_POWER) -> tuple[jax.Array, jax.Array]:
    """Attention over stored bindings: ``(scores [B, V], known [B])`` where scores = Σ_k a_k·read_k over
    the ``neighbours`` most similar registered bindings, a = softmax(φ⁴·sim), read_k = ⟨C_k⁻¹ M[slot_k,
    lane_k], E(v)⟩; ``known``: the registry holds this very context. Queries go through in chunks of
    ``QUERY_CHUNK`` (a ``[chunk, registry]`` similarity block at a time), so memory stays bounded."""
    b = contexts.shape[0]
    if b > QUERY_CHUNK:
        pad = (-b) % QUERY_CHUNK
        chunks = jnp.pad(contexts, ((0, pad), (0, 0))).reshape(-1, QUERY_CHUNK, contexts.shape[1])
        scores, known = jax.lax.map(lambda c: similarity_read(state, c, capacity, neighbours, power), chunks)
        return scores.reshape(-1, scores.shape[-1])[:b], known.reshape(-1)[:b]
    emb = state["embed"]
    sim, rows = jax.lax.top_k(similarity(state, contexts, power), min(neighbours, state["ep_ctx"].shape[0]))
    ctx = jnp.maximum(state["ep_ctx"][rows], 0)                          # [B, K, n]
    c = context_product(emb, ctx)
    m = _trace(state)[_hash(ctx, 0, capacity), state["ep_lane"][rows]]  # [B, K, 4, 4]
    reads = jnp.einsum("bkij,vij->bkv", jnp.einsum("bkji,bkjl->bkil", c, m), emb)
    valid = jnp.isfinite(sim)
    attn = jax.nn.softmax(jnp.where(valid, SIMILARITY_POWER * sim, -jnp.inf), axis=-1)
    attn = jnp.where(valid, attn, 0.0)
    known = ((ctx == contexts[:, None, :]).all(-1) & valid).any(-1) | _known(state, contexts, capacity)
    return jnp.einsum("bk,bkv->bv", attn, reads), known


def _best_scores(state: State, contexts: jax.Array, capacity: int) -> jax.Array:
    """``[B, V]``: the exact store's strongest lane; for a context the memory does not know, the
    similarity read (general mode) or the prefix + suffix superposition (backoff mode)."""
    scores = _lane_scores(state, contexts, capacity)                   # [S, B, L, V]
    best = scores[0].max(axis=1)
    if state["generalise"].shape[0]:
        known = _registered(state, contexts, capacity)

        def fill(ctx, kn, bs):                                          # a block whose contexts are all stored
            return jax.lax.cond(kn.all(), lambda: bs,                   # skips the search
                                lambda: jnp.where(kn[:, None], bs, similarity_read(state, ctx, capacity)[0]))

        b = contexts.shape[0]
        if b > QUERY_CHUNK:
            pad = (-b) % QUERY_CHUNK
            blocks = (jnp.pad(contexts, ((0, pad), (0, 0))).reshape(-1, QUERY_CHUNK, contexts.shape[1]),
                      jnp.pad(known, (0, pad), constant_values=True).reshape(-1, QUERY_CHUNK),
                      jnp.pad(best, ((0, pad), (0, 0))).reshape(-1, QUERY_CHUNK, best.shape[1]))
            best = jax.lax.map(lambda x: fill(*x), blocks).reshape(-1, best.shape[1])[:b]
        else:
            best = fill(contexts, known, best)
    elif scores.shape[0] > 1:
        backoff = scores[1].max(axis=1) + scores[2].max(axis=1)
        best = jnp.where(_known(state, contexts, capacity)[:, None], best, backoff)
    return best


def _registered(state: State, contexts: jax.Array, capacity: int) -> jax.Array:
    """True where the registry holds a binding of this very context (in any lane) or the exact slot was
    last written by it."""
    hit = _known(state, contexts, capacity)
    for lane in range(state["lane_target"].shape[-1]):
        hit = hit | (_lookup(state, contexts, jnp.full(contexts.shape[:-1], lane, jnp.int32)) >= 0)
    return hit


def _known(state: State, contexts: jax.Array, capacity: int) -> jax.Array:
    """True where the exact store's slot was last written by this very context."""
    return state["fingerprint"][_hash(contexts, 0, capacity)] == _hash(contexts, 99, 2 ** 31 - 1)


def retrieve(state: State, contexts: jax.Array, capacity: int, temperature: float = 0.25):
    """``(token [B], confidence [B])`` from :func:`_best_scores` (confidence: softmax of the scores)."""
    best = _best_scores(state, contexts, capacity)
    probs = jax.nn.softmax(best / temperature, axis=-1)
    token = jnp.argmax(best, axis=-1)
    return token, jnp.take_along_axis(probs, token[:, None], -1)[:, 0]


def retrieve_all(state: State, contexts: jax.Array, capacity: int):
    """Per-lane answers of the exact store: ``(tokens [B, L], strength [B, L])`` (paradox lanes)."""
    scores = _lane_scores(state, contexts, capacity)[0]
    return jnp.argmax(scores, -1), jnp.max(scores, -1)


# --------------------------------------------------------------------------- dreams
def _replay(state: State, capacity: int) -> dict[str, jax.Array]:
    """The registry as replay material: per binding its slot, lane, weight, context product C."""
    valid = state["ep_weight"] > 0
    ctx = jnp.maximum(state["ep_ctx"], 0)
    return {"slot": _hash(ctx, 0, capacity), "lane": state["ep_lane"], "valid": valid,
            "w": jnp.where(valid, state["ep_weight"], 0.0), "C": context_product(state["embed"], ctx),
            "ctx": ctx}


def _reconstruct(rp, emb, labels, shape) -> jax.Array:
    """Σ_j w_j φ⁻¹ C_j E(a_j) per slot lane ``[capacity, L, 4, 4]``."""
    write = (rp["w"] * PHI ** -1)[:, None, None] * (rp["C"] @ emb[labels])
    return jnp.zeros(shape).at[rp["slot"], rp["lane"]].add(write)


def _unexplained(trace, rp, emb, labels) -> jax.Array:
    """``[capacity, L]``: ‖M − Σ_j w_j φ⁻¹ C_j E(a_j)‖² per slot lane."""
    return jnp.sum((trace - _reconstruct(rp, emb, labels, trace.shape)) ** 2, axis=(-1, -2))


def _own_read(m_own: jax.Array, rp, emb) -> jax.Array:
    """``[E, V]``: ⟨C_j⁻¹ m_j, E(v)⟩ for one ``[E, 4, 4]`` matrix per binding."""
    return jnp.einsum("eij,vij->ev", jnp.einsum("eji,ejk->eik", rp["C"], m_own), emb)


def _nrem(trace, rp, emb, labels, steps: int = NREM_STEPS) -> jax.Array:
    """Greedy coordinate descent on the unexplained energy: per slot lane, relabel the one binding whose
    best relabelling lowers it most (ΔJ = −2 w φ⁻¹ (s_new − s_old), s: read of the residual without it)."""
    n_lanes = trace.shape[1]
    key = rp["slot"] * n_lanes + rp["lane"]
    rows = jnp.arange(labels.shape[0])

    def step(_, lab):
        own = (rp["w"] * PHI ** -1)[:, None, None] * (rp["C"] @ emb[lab])
        recon = jnp.zeros(trace.shape).at[rp["slot"], rp["lane"]].add(own)
        residual = trace[rp["slot"], rp["lane"]] - recon[rp["slot"], rp["lane"]] + own
        s = _own_read(residual, rp, emb)
        best = jnp.argmax(s, -1)
        gain = jnp.where(rp["valid"], rp["w"] * (s[rows, best] - s[rows, lab]), 0.0)
        top = jax.ops.segment_max(gain, key, num_segments=trace.shape[0] * n_lanes)[key]
        first = jax.ops.segment_min(jnp.where(gain == top, rows, rows.shape[0]), key,
                                    num_segments=trace.shape[0] * n_lanes)[key]
        change = (first == rows) & (gain > 1e-6)
        return jnp.where(change, best, lab)

    return jax.lax.fori_loop(0, steps, step, labels)


def _rem(trace, rp, emb, labels, read, key) -> tuple[jax.Array, jax.Array]:
    """Seeded kick + non-REM settle, kept per slot lane where the unexplained energy fell.
    Returns ``(labels, lanes_accepted)``."""
    k_pick, k_jit = jax.random.split(key)
    jitter = jax.random.normal(k_jit, read.shape) * REM_JITTER * jnp.std(read, -1, keepdims=True)
    kicked = jax.random.uniform(k_pick, labels.shape) < REM_KICK
    proposal = _nrem(trace, rp, emb, jnp.where(kicked & rp["valid"], jnp.argmax(read + jitter, -1), labels))
    better = _unexplained(trace, rp, emb, proposal) < _unexplained(trace, rp, emb, labels) - 1e-6
    keep = better[rp["slot"], rp["lane"]]
    return jnp.where(keep, proposal, labels), jnp.sum(better)


def _explained(trace, rp, emb, labels) -> jax.Array:
    """Share of the trace's energy explained by the decoded answers: 1 − Σ unexplained / Σ ‖M‖²."""
    return 1.0 - jnp.sum(_unexplained(trace, rp, emb, labels)) / jnp.maximum(jnp.sum(trace ** 2), 1e-12)


def _rebind(state: State, rp, labels) -> tuple[jax.Array, jax.Array]:
    """Margin perceptron on the consolidation D: where the one-shot read of a binding's context does not
    put its decoded answer a ahead of every other token v by φ⁻¹, D[slot, lane] += φ⁻³ φ⁻¹ C E(a) and
    D[slot, lane of v] −= φ⁻³ φ⁻¹ C E(v). Returns ``(D, bindings still violating)``."""
    emb, m0 = state["embed"], state["memory"][0]
    rows = jnp.arange(labels.shape[0])
    first = _first_occurrence([rp["ctx"][:, i] for i in range(rp["ctx"].shape[1])] + [(~rp["valid"]).astype(jnp.int32)])
    lanes_per_context = jax.ops.segment_sum(rp["valid"].astype(jnp.int32), first, num_segments=rows.shape[0])[first]
    active = rp["valid"] & (lanes_per_context == 1)              # paradox contexts keep their lanes as they are
    step = REBIND_RATE * PHI ** -1

    def violations(d):
        read = jnp.einsum("elij,vij->elv", jnp.einsum("eji,eljk->elik", rp["C"], (m0 + d)[rp["slot"]]), emb)
        top = read.max(1)
        good = top[rows, labels]
        other = top.at[rows, labels].set(-jnp.inf)
        v = jnp.argmax(other, -1)
        viol = active & (good - other[rows, v] < REBIND_MARGIN)
        return viol, v, jnp.argmax(read[rows, :, v], -1)

    def epoch(_, d):
        viol, v, v_lane = violations(d)
        g = jnp.where(viol, step, 0.0)[:, None, None]
        d = d.at[rp["slot"], rp["lane"]].add(g * (rp["C"] @ emb[labels]))
        return d.at[rp["slot"], v_lane].add(-g * (rp["C"] @ emb[v]))

    d = jax.lax.fori_loop(0, REBIND_EPOCHS, epoch, state["consolidation"])
    return d, jnp.sum(violations(d)[0])


def decode(state: State, key: jax.Array, capacity: int, max_iters: int = MAX_DREAM_ITERS, rem: bool = True):
    """The dream's joint decoding of every registered binding's answer from the trace (non-REM + REM).
    Returns ``(labels [registry], stats)``."""
    emb, trace = state["embed"], state["memory"][0]
    rp = _replay(state, capacity)
    read = _own_read(trace[rp["slot"], rp["lane"]], rp, emb)
    labels0 = jnp.argmax(read, -1)

    def body(carry):
        lab, it, key, _, acc = carry
        key, sub = jax.random.split(key)
        new = _nrem(trace, rp, emb, lab)
        if rem:
            new, a = _rem(trace, rp, emb, new, read, sub)
            acc = acc + a
        return new, it + 1, key, jnp.any((new != lab) & rp["valid"]), acc

    def cond(carry):
        _, it, _, changed, _ = carry
        return (it < max_iters) & changed

    lab, iters, _, _, acc = jax.lax.while_loop(
        cond, body, (labels0, jnp.int32(0), key, jnp.bool_(True), jnp.int32(0)))
    stats = {"iterations": iters, "stability_before": _explained(trace, rp, emb, labels0),
             "stability": _explained(trace, rp, emb, lab), "relabelled": jnp.sum((lab != labels0) & rp["valid"]),
             "rem_lanes_accepted": acc}
    return lab, stats


@functools.partial(jax.jit, static_argnames=("max_iters", "rem"))
def dream(state: State, key: jax.Array, max_iters: int = MAX_DREAM_ITERS, rem: bool = True):
    """Consolidate the memory; returns ``(state, stats)`` — see the module docstring. Only the
    consolidation D changes (retrieval reads trace + D). ``rem=False``: non-REM only (an ablation)."""
    capacity = state["memory"].shape[1]
    labels, stats = decode(state, key, capacity, max_iters, rem)
    d, left = _rebind(state, _replay(state, capacity), labels)
    return {**state, "consolidation": d}, {**stats, "rebind_violations": left}


def stability(state: State) -> jax.Array:
    """Share of the exact store's trace energy that the one-shot answers of the registered bindings explain."""
    rp = _replay(state, state["memory"].shape[1])
    trace = state["memory"][0]
    labels = jnp.argmax(_own_read(trace[rp["slot"], rp["lane"]], rp, state["embed"]), -1)
    return _explained(trace, rp, state["embed"], labels)


def noop_dream(state: State, key: jax.Array | None = None):
    """The baseline every dream metric is compared with: changes nothing."""
    return state, {"iterations": jnp.int32(0), "stability": stability(state)}


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
