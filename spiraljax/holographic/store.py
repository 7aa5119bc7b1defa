"""Writing the memory: the state pytree, hashing, lanes and the binding registry.

    learn: M[slot(ctx), lane] += φ⁻¹ · C(ctx) · E(target)      (C = ordered product of embeddings)

* the **trace** M ``[stores, capacity, lanes, 4, 4]``: a hash table of superposed bindings. Each slot has
  ``lanes`` phase lanes: a target that contradicts what a slot already holds goes to the next free lane
  (paradox resolution), so both stay retrievable (``retrieve_all``). :func:`learn` on a batch assigns lanes
  exactly as learning the items one at a time would (:func:`learn_reference`).
* the **registry** of bindings (context, lane, number of writes) — the stored contexts, not their targets —
  with an open-addressed index (``INDEX_PROBES`` cells, 4× the rows) to find a binding. It is what the
  similarity read attends over and what a dream replays. Bindings beyond ``episodes`` rows are not
  registered (the suite reports a full registry).

Stores are arrays (no Python dict); ``backoff`` mode keeps three (whole context, prefix, suffix).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from spiraljax.holographic.config import HolographicConfig
from spiraljax.ops.clifford import context_product, token_embeddings
from spiraljax.ops.constants import PHI
from spiraljax.ops.toroidal import phase_kernel

SIMILARITY_POWER = PHI**4  # sharpening of the phase kernel and of the attention softmax
State = dict[str, jax.Array]
_MULT = jnp.uint32(2654435761)
INDEX_PROBES = 8  # open-addressing probes of the registry index (4× the registry)
KERNEL_TABLE_MAX = 4096  # vocab sizes up to this read the similarity kernel from a V×V table


def token_hash(tokens: jax.Array, salt: int, capacity: int) -> jax.Array:
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
    return {
        "memory": jnp.zeros((n_stores, cfg.capacity, cfg.lanes, 4, 4), jnp.float32),
        "lane_target": jnp.full((n_stores, cfg.capacity, cfg.lanes), -1, jnp.int32),
        "consolidation": jnp.zeros((cfg.capacity, cfg.lanes, 4, 4), jnp.float32),
        "fingerprint": jnp.full((cfg.capacity,), -1, jnp.int32),  # which context owns an exact slot
        "embed": emb,
        "kernel": token_kernel(emb) if cfg.vocab_size <= KERNEL_TABLE_MAX else jnp.zeros((0, 0), jnp.float32),
        "ep_ctx": jnp.full((cfg.episodes, n), -1, jnp.int32),
        "ep_lane": jnp.zeros((cfg.episodes,), jnp.int32),
        "ep_weight": jnp.zeros((cfg.episodes,), jnp.float32),
        "ep_count": jnp.zeros((), jnp.int32),
        "ep_index": jnp.full((4 * cfg.episodes,), -1, jnp.int32),  # hash(context, lane) → registry row
        "position_weights": PHI ** (-cfg.recency * jnp.arange(n - 1, -1, -1, dtype=jnp.float32)),
        "generalise": jnp.zeros((1 if cfg.mode == "general" else 0,), jnp.float32),
    }


def store_views(contexts: jax.Array, n_stores: int) -> list[jax.Array]:
    """Token views per store: the whole context, its prefix, its suffix."""
    return [contexts, contexts[..., :-1], contexts[..., 1:]][:n_stores]


def _sorted_groups(keys: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Order of the rows sorted by the key tuple (then by row index) and, in that order, where a new
    key tuple starts."""
    idx = jnp.arange(keys[0].shape[0])
    order = jnp.lexsort((idx, *reversed(keys)))  # keys[0] is the primary key
    starts = jnp.zeros(idx.shape, bool).at[0].set(True)
    for k in keys:
        ks = k[order]
        starts = starts.at[1:].set(starts[1:] | (ks[1:] != ks[:-1]))
    return order, starts


def first_occurrence(keys: list[jax.Array]) -> jax.Array:
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
    first = first_occurrence([slot, targets])
    new_rep = (first == idx) & ~has  # first appearance of a target the slot lacks
    rank = _rank_in_group(slot, new_rep)[first]
    free = held < 0
    kth_free = jnp.argmax(free & (jnp.cumsum(free, -1) - 1 == rank[:, None]), -1)
    fits = rank < free.sum(-1)
    lane = jnp.where(has, jnp.argmax(same, -1), jnp.where(fits, kth_free, held.shape[-1] - 1))
    return lane, new_rep & fits


def lookup(state: State, contexts: jax.Array, lane: jax.Array) -> jax.Array:
    """Registry row of each (context, lane) binding, −1 when absent: the index is open-addressed, a
    binding sits in one of ``INDEX_PROBES`` consecutive cells from its hash, verified by equality."""
    size = state["ep_index"].shape[0]
    h = token_hash(jnp.concatenate([contexts, lane[:, None]], -1), 11, size)
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
    found = lookup(state, contexts, lane)
    first = first_occurrence([contexts[:, i] for i in range(contexts.shape[1])] + [lane])
    new_rep = (first == idx) & (found < 0)
    new_row = state["ep_count"] + jnp.cumsum(new_rep) - new_rep
    row = jnp.where(found >= 0, found, new_row[first])
    write_at = jnp.where(new_rep, new_row, rows)  # out of range → dropped
    index = state["ep_index"]
    h = token_hash(jnp.concatenate([contexts, lane[:, None]], -1), 11, size)
    placed = ~(new_rep & (new_row < rows))
    for p in range(INDEX_PROBES):
        cell = (h + p) % size
        want = ~placed & (index[cell] < 0)
        claim = jnp.full((size,), rows, jnp.int32).at[jnp.where(want, cell, size)].min(new_row, mode="drop")
        won = want & (claim[cell] == new_row)
        index = index.at[jnp.where(won, cell, size)].set(new_row, mode="drop")
        placed = placed | won
    return {
        **state,
        "ep_ctx": state["ep_ctx"].at[write_at].set(contexts, mode="drop"),
        "ep_lane": state["ep_lane"].at[write_at].set(lane, mode="drop"),
        "ep_index": index,
        "ep_weight": state["ep_weight"].at[row].add(1.0, mode="drop"),
        "ep_count": jnp.minimum(state["ep_count"] + new_rep.sum(), rows),
    }


def learn(state: State, contexts: jax.Array, targets: jax.Array, capacity: int) -> State:
    """Store ``contexts [B, n] → targets [B]`` in every store and the registry, in one vectorised call
    (same result as learning the items one at a time, ``learn_reference``)."""
    emb = state["embed"]
    memory, lane_target = state["memory"], state["lane_target"]
    lanes0 = None
    for s, view in enumerate(store_views(contexts, memory.shape[0])):
        slot = token_hash(view, s, capacity)
        lane, claims = _assign_lanes(lane_target[s, slot], slot, targets)
        memory = memory.at[s, slot, lane].add(PHI**-1 * context_product(emb, view) @ emb[targets])
        lane_target = lane_target.at[s, jnp.where(claims, slot, capacity), lane].set(targets, mode="drop")
        lanes0 = lane if s == 0 else lanes0
    fingerprint = state["fingerprint"].at[token_hash(contexts, 0, capacity)].set(token_hash(contexts, 99, 2**31 - 1))
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
    views = [np.asarray(v) for v in store_views(jnp.asarray(contexts), memory.shape[0])]
    slots = [np.asarray(token_hash(jnp.asarray(v), s, capacity)) for s, v in enumerate(views)]
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
            memory[s, slots[s][i], lane] += PHI**-1 * product @ emb[t]
            if s == 0:
                key = (tuple(contexts[i].tolist()), lane)
                registry[key] = registry.get(key, 0.0) + 1.0
    rows = len(registry)
    ep_ctx = np.full(state["ep_ctx"].shape, -1, np.int32)
    ep_lane, ep_weight = np.zeros(state["ep_lane"].shape, np.int32), np.zeros(state["ep_weight"].shape, np.float32)
    for r, ((c, lane), w) in enumerate(list(registry.items())[: ep_ctx.shape[0]]):
        ep_ctx[r], ep_lane[r], ep_weight[r] = c, lane, w
    fingerprint = (
        state["fingerprint"]
        .at[token_hash(jnp.asarray(contexts), 0, capacity)]
        .set(token_hash(jnp.asarray(contexts), 99, 2**31 - 1))
    )
    return {
        **state,
        "memory": jnp.asarray(memory, jnp.float32),
        "lane_target": jnp.asarray(lane_target),
        "fingerprint": fingerprint,
        "ep_ctx": jnp.asarray(ep_ctx),
        "ep_lane": jnp.asarray(ep_lane),
        "ep_weight": jnp.asarray(ep_weight),
        "ep_count": jnp.int32(min(rows, ep_ctx.shape[0])),
    }


def token_kernel(emb: jax.Array, power: float = SIMILARITY_POWER) -> jax.Array:
    """``[V, V]``: ((1 + ⟨E(a)† E(b)⟩₀/4)/2)^power — the position kernel depends only on the token pair."""
    return phase_kernel(jnp.einsum("aij,bij->ab", emb, emb) / 4.0, power)
