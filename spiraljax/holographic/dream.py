"""Dreams: joint decoding of the registered bindings' answers, and re-binding.

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

import jax
import jax.numpy as jnp

from spiraljax.holographic.store import State, first_occurrence, token_hash
from spiraljax.ops.clifford import context_product
from spiraljax.ops.constants import PHI

MAX_DREAM_ITERS = math.ceil(PHI**5)  # 12 (φ⁵ ≈ 11.09)
NREM_STEPS = math.ceil(PHI**4)  # 7 greedy relabelling steps per non-REM phase
REM_KICK = PHI**-2  # share of bindings kicked per REM phase
REM_JITTER = 2 * math.pi / PHI  # jitter scale (× the spread of a binding's read)
REBIND_EPOCHS = math.ceil(PHI**8)  # 47 perceptron passes over the registry
REBIND_RATE = PHI**-3
REBIND_MARGIN = PHI**-1


def _replay(state: State, capacity: int) -> dict[str, jax.Array]:
    """The registry as replay material: per binding its slot, lane, weight, context product C."""
    valid = state["ep_weight"] > 0
    ctx = jnp.maximum(state["ep_ctx"], 0)
    return {
        "slot": token_hash(ctx, 0, capacity),
        "lane": state["ep_lane"],
        "valid": valid,
        "w": jnp.where(valid, state["ep_weight"], 0.0),
        "C": context_product(state["embed"], ctx),
        "ctx": ctx,
    }


def _reconstruct(rp, emb, labels, shape) -> jax.Array:
    """Σ_j w_j φ⁻¹ C_j E(a_j) per slot lane ``[capacity, L, 4, 4]``."""
    write = (rp["w"] * PHI**-1)[:, None, None] * (rp["C"] @ emb[labels])
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
        own = (rp["w"] * PHI**-1)[:, None, None] * (rp["C"] @ emb[lab])
        recon = jnp.zeros(trace.shape).at[rp["slot"], rp["lane"]].add(own)
        residual = trace[rp["slot"], rp["lane"]] - recon[rp["slot"], rp["lane"]] + own
        s = _own_read(residual, rp, emb)
        best = jnp.argmax(s, -1)
        gain = jnp.where(rp["valid"], rp["w"] * (s[rows, best] - s[rows, lab]), 0.0)
        top = jax.ops.segment_max(gain, key, num_segments=trace.shape[0] * n_lanes)[key]
        first = jax.ops.segment_min(
            jnp.where(gain == top, rows, rows.shape[0]), key, num_segments=trace.shape[0] * n_lanes
        )[key]
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
    return 1.0 - jnp.sum(_unexplained(trace, rp, emb, labels)) / jnp.maximum(jnp.sum(trace**2), 1e-12)


def _rebind(state: State, rp, labels) -> tuple[jax.Array, jax.Array]:
    """Margin perceptron on the consolidation D: where the one-shot read of a binding's context does not
    put its decoded answer a ahead of every other token v by φ⁻¹, D[slot, lane] += φ⁻³ φ⁻¹ C E(a) and
    D[slot, lane of v] −= φ⁻³ φ⁻¹ C E(v). Returns ``(D, bindings still violating)``."""
    emb, m0 = state["embed"], state["memory"][0]
    rows = jnp.arange(labels.shape[0])
    first = first_occurrence([rp["ctx"][:, i] for i in range(rp["ctx"].shape[1])] + [(~rp["valid"]).astype(jnp.int32)])
    lanes_per_context = jax.ops.segment_sum(rp["valid"].astype(jnp.int32), first, num_segments=rows.shape[0])[first]
    active = rp["valid"] & (lanes_per_context == 1)  # paradox contexts keep their lanes as they are
    step = REBIND_RATE * PHI**-1

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

    lab, iters, _, _, acc = jax.lax.while_loop(cond, body, (labels0, jnp.int32(0), key, jnp.bool_(True), jnp.int32(0)))
    stats = {
        "iterations": iters,
        "stability_before": _explained(trace, rp, emb, labels0),
        "stability": _explained(trace, rp, emb, lab),
        "relabelled": jnp.sum((lab != labels0) & rp["valid"]),
        "rem_lanes_accepted": acc,
    }
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
