"""The contemplative probe: 8 scenarios → silence ratio, proportionality, holism, B2Q, mood; then a
TowerMemory ablation on the validation set (the model as trained vs ``cut_memory=True``).

``python evaluate.py RUN --suite probe [--json] [--opt tokens=24 samples=4 threshold=0.7 memory_sequences=400]``

B2Q (memory queries / hold phases) is 1 by construction at evaluation: every hold phase queries
when ``train=False`` (training queries with probability ``memory.query_prob``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from spiraljax.data import glyphs
from spiraljax.eval.contemplative import ContemplativeSettings, contemplative_generate, contemplative_sampler
from spiraljax.eval.lm import validation_batches
from spiraljax.eval.suites import EvalContext, Option, SuiteResult, register_suite
from spiraljax.losses import model_extras, token_nll
from spiraljax.ops.soma import RESONANCES, field_charge, resonance_label

# [latency, voltage, temperature, error_rate, bandwidth]
SCENARIOS: dict[str, list[float]] = {
    "calm": [0.1, 0.5, 0.5, 0.02, 0.9],
    "high_latency": [0.95, 0.5, 0.5, 0.1, 0.5],
    "power_surge": [0.2, 0.98, 0.55, 0.2, 0.8],
    "overheating": [0.2, 0.5, 0.97, 0.3, 0.8],
    "packet_loss": [0.5, 0.5, 0.5, 0.9, 0.4],
    "low_bandwidth": [0.6, 0.5, 0.5, 0.2, 0.05],
    "multi_fault_crisis": [0.95, 0.05, 0.95, 0.9, 0.1],
    "wisdom_question": [0.15, 0.5, 0.5, 0.05, 0.8],
}
MOODS = ((0.5, "🕊️ serene"), (1.0, "🌿 attentive"), (float("inf"), "🔥 stirred"))
SCENARIO_KEY_STRIDE = 1000  # scenario i samples with jax.random.key(seed · 1000 + i): distinct per scenario and seed


def proportionality(active_count: float) -> str:
    return "High" if active_count > 4 else "Moderate" if active_count > 1 else "Low"


def scenario_metrics(ids: np.ndarray, aux: dict) -> dict:
    """Metrics of the generated glyphs ``ids [S, n]`` of one scenario (S samples)."""
    silent = glyphs.is_silence(ids)
    active = [ids[s][~silent[s]] for s in range(ids.shape[0])]
    n_active = float(np.mean([len(a) for a in active]))
    categories = [len({int(glyphs.CATEGORY_OF[i]) for i in a}) for a in active]
    holds = float(np.sum(aux["hold_phases"])) if "hold_phases" in aux else 0.0
    queries = float(np.sum(aux["memory_queries"])) if "memory_queries" in aux else 0.0
    var = float(np.mean(aux["hidden_var"]))
    return {
        "silence_ratio": float(silent.mean()),
        "active_glyphs": n_active,
        "proportionality": proportionality(n_active),
        "holism": float(np.mean([c > 1 for c in categories])),
        "categories": float(np.mean(categories)),
        "b2q": queries / holds if holds else 0.0,
        "mood_variance": var,
        "mood": next(m for v, m in MOODS if var < v),
    }


def memory_ablation(model, variables, batches, step: int = 0) -> dict:
    """Does TowerMemory change the predictions? Over ``batches``: NLL (nats/glyph over the loss mask)
    with the reads added vs cut (``cut_memory=True``: the same reads, nothing added), the same on the
    positions a read reaches (hold positions whose cycle found a painting), |Δlogits| there, and
    which paintings the reads return (distinct slots per sequence; share of reads returning slot 0,
    the only slot the old charge-only read ever returned). ``nll_charge``: the same model reading by
    charge alone (``charge_only_memory=True``, the old read) — what content addressing adds."""

    @jax.jit
    def forward(batch):
        kw = dict(train=False, step=step, **model_extras(batch))
        logits, aux = model.apply(variables, batch["inputs"], **kw)
        cut, _ = model.apply(variables, batch["inputs"], cut_memory=True, **kw)
        by_charge, _ = model.apply(variables, batch["inputs"], charge_only_memory=True, **kw)
        mask = batch["mask"].astype(jnp.float32)
        return {
            "nll": token_nll(logits, batch["targets"]) * mask,
            "nll_cut": token_nll(cut, batch["targets"]) * mask,
            "nll_charge": token_nll(by_charge, batch["targets"]) * mask,
            "mask": mask,
            "dlogit": jnp.mean(jnp.abs(logits - cut), axis=-1),
            "dlogit_max": jnp.max(jnp.abs(logits - cut), axis=-1),
            "slot": aux["memory_slot"],
            "read": aux["memory_read"],
            "gate": aux["memory_gate"],
        }

    rows = [jax.device_get(forward({k: jnp.asarray(v) for k, v in b.items()})) for b in batches]
    cat = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    on = cat["read"] & (cat["mask"] > 0)  # targets whose position got a painting
    per_seq = (cat["nll"].sum(1) - cat["nll_cut"].sum(1)) / np.maximum(cat["mask"].sum(1), 1.0)
    slots = cat["slot"]
    hits = slots >= 0
    distinct = np.array([len(set(row[row >= 0].tolist())) for row in slots])
    tokens = max(float(cat["mask"].sum()), 1.0)
    return {
        "sequences": int(len(slots)),
        "nll": float(cat["nll"].sum() / tokens),
        "nll_cut": float(cat["nll_cut"].sum() / tokens),
        "nll_charge_only": float(cat["nll_charge"].sum() / tokens),
        "delta_nll_se": float(per_seq.std(ddof=1) / np.sqrt(len(per_seq))) if len(per_seq) > 1 else 0.0,
        "reached_share": float(on.sum() / tokens),
        "nll_reached": float(cat["nll"][on].sum() / max(on.sum(), 1)),
        "nll_cut_reached": float(cat["nll_cut"][on].sum() / max(on.sum(), 1)),
        "nll_charge_only_reached": float(cat["nll_charge"][on].sum() / max(on.sum(), 1)),
        "mean_abs_dlogit_reached": float(cat["dlogit"][on].mean()) if on.any() else 0.0,
        "mean_max_abs_dlogit_reached": float(cat["dlogit_max"][on].mean()) if on.any() else 0.0,
        "gate_reached": float(cat["gate"][on].mean()) if on.any() else 0.0,
        "reads_per_sequence": float(hits.sum(1).mean()),
        "distinct_slots_per_sequence": float(distinct.mean()),
        "slot0_share_of_reads": float((slots[hits] == 0).mean()) if hits.any() else 0.0,
        "slot_histogram": np.bincount(slots[hits], minlength=1).tolist(),
    }


def memory_text(m: dict) -> str:
    return "\n".join(
        [
            f"TowerMemory ablation over {m['sequences']} validation sequences (reads added vs cut_memory=True):",
            f"  NLL nats/glyph: {m['nll']:.4f} with memory, {m['nll_cut']:.4f} cut "
            f"(Δ {m['nll'] - m['nll_cut']:+.4f}; standard error over sequences {m['delta_nll_se']:.4f}); "
            f"{m['nll_charge_only']:.4f} reading by charge only (the old read)",
            f"  positions a read reaches: {100 * m['reached_share']:.1f} % of targets; NLL there "
            f"{m['nll_reached']:.4f} vs {m['nll_cut_reached']:.4f} cut, {m['nll_charge_only_reached']:.4f} by charge; "
            f"mean |Δlogit| {m['mean_abs_dlogit_reached']:.4f} "
            f"(max over vocab {m['mean_max_abs_dlogit_reached']:.4f}); gate {m['gate_reached']:.3f}",
            f"  reads per sequence {m['reads_per_sequence']:.2f}, distinct paintings read per sequence "
            f"{m['distinct_slots_per_sequence']:.2f}, share of reads returning slot 0 {m['slot0_share_of_reads']:.2f}, "
            f"slot histogram {m['slot_histogram']}",
        ]
    )


# --opt: glyphs generated per sample, samples per scenario, the ContemplativeSettings threshold and temperature,
# validation sequences of the TowerMemory ablation
@register_suite(
    "probe",
    families=("spiralformer",),
    sources=("mycelial",),
    options={
        "tokens": Option(int, 24, minimum=1),
        "samples": Option(int, 4, minimum=1),
        "threshold": Option(float, ContemplativeSettings.threshold),
        "temperature": Option(float, ContemplativeSettings.temperature),
        "memory_sequences": Option(int, 400, minimum=1),
    },
)
def probe_suite(
    ctx: EvalContext, *, tokens: int, samples: int, threshold: float, temperature: float, memory_sequences: int
) -> SuiteResult:
    n_tokens = tokens
    settings = ContemplativeSettings(threshold=threshold, temperature=temperature)
    seq_len = ctx.cfg.model.seq_len
    sampler = contemplative_sampler(ctx.model, seq_len, settings)  # one compile for all scenarios
    rows = {}
    for i, (name, cond) in enumerate(SCENARIOS.items()):
        conditions = np.tile(np.asarray(cond, np.float32), (samples, 1))
        key = jax.random.key(ctx.seed * SCENARIO_KEY_STRIDE + i)
        ids, gated = contemplative_generate(
            ctx.model,
            ctx.variables,
            conditions,
            min(n_tokens, seq_len - 1),
            key,
            seq_len,
            settings,
            step=ctx.step,
            sampler=sampler,
        )
        _, aux = ctx.model.apply(
            ctx.variables, jnp.asarray(ids[:, :seq_len]), step=ctx.step, conditions=jnp.asarray(conditions)
        )
        charge = field_charge(jnp.asarray(cond))
        row = scenario_metrics(ids[:, 1:], jax.device_get(aux))
        row.update(
            resonance=RESONANCES[int(resonance_label(charge))],
            entropy_gated=float(gated.mean()),
            example=" ".join(glyphs.decode(ids[0, 1:])),
        )
        rows[name] = row
    head = f"{'scenario':<20}{'resonance':<10}{'silence':>8}{'active':>7}  {'proport.':<9}{'holism':>7}{'B2Q':>6}  mood"
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lines.append(
            f"{name:<20}{r['resonance']:<10}{r['silence_ratio']:>8.2f}{r['active_glyphs']:>7.1f}  "
            f"{r['proportionality']:<9}{r['holism']:>7.2f}{r['b2q']:>6.2f}  {r['mood']}"
        )
    lines.append("")
    lines += [f"{name:<20}{r['example']}" for name, r in rows.items()]
    data = {"scenarios": rows, "step": ctx.step}
    if ctx.cfg.model.memory.enabled:
        data["memory"] = memory_ablation(
            ctx.model, ctx.variables, validation_batches(ctx.dataset, memory_sequences), ctx.step
        )
        lines += ["", memory_text(data["memory"])]
    return SuiteResult(data, "\n".join(lines))
