"""The contemplative probe: 8 scenarios → silence ratio, proportionality, holism, B2Q, mood.

``python evaluate.py RUN --suite probe [--json] [--opt tokens=24 samples=4 threshold=0.7]``
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from spiraljax.data import glyphs
from spiraljax.eval.contemplative import ContemplativeSettings, contemplative_generate
from spiraljax.eval.suites import EvalContext, SuiteResult, register_suite
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
    return {"silence_ratio": float(silent.mean()), "active_glyphs": n_active,
            "proportionality": proportionality(n_active), "holism": float(np.mean([c > 1 for c in categories])),
            "categories": float(np.mean(categories)), "b2q": queries / holds if holds else 0.0,
            "mood_variance": var, "mood": next(m for v, m in MOODS if var < v)}


@register_suite("probe", families=("spiralformer",), sources=("mycelial",),
                options={"tokens": int, "samples": int, "threshold": float, "temperature": float})
def probe_suite(ctx: EvalContext) -> SuiteResult:
    opts = ctx.options
    n_tokens, samples = int(opts.get("tokens", 24)), int(opts.get("samples", 4))
    settings = ContemplativeSettings(threshold=float(opts.get("threshold", 0.7)),
                                     temperature=float(opts.get("temperature", 1.0)))
    seq_len = ctx.cfg.model.seq_len
    rows = {}
    for i, (name, cond) in enumerate(SCENARIOS.items()):
        conditions = np.tile(np.asarray(cond, np.float32), (samples, 1))
        ids, gated = contemplative_generate(ctx.model, ctx.variables, conditions, min(n_tokens, seq_len - 1),
                                            jax.random.key(ctx.seed * 1000 + i), seq_len, settings, step=ctx.step)
        _, aux = ctx.model.apply(ctx.variables, jnp.asarray(ids[:, :seq_len]), step=ctx.step,
                                 conditions=jnp.asarray(conditions))
        charge = field_charge(jnp.asarray(cond))
        row = scenario_metrics(ids[:, 1:], jax.device_get(aux))
        row.update(resonance=RESONANCES[int(resonance_label(charge))], entropy_gated=float(gated.mean()),
                   example=" ".join(glyphs.decode(ids[0, 1:])))
        rows[name] = row
    head = f"{'scenario':<20}{'resonance':<10}{'silence':>8}{'active':>7}  {'proport.':<9}{'holism':>7}{'B2Q':>6}  mood"
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lines.append(f"{name:<20}{r['resonance']:<10}{r['silence_ratio']:>8.2f}{r['active_glyphs']:>7.1f}  "
                     f"{r['proportionality']:<9}{r['holism']:>7.2f}{r['b2q']:>6.2f}  {r['mood']}")
    lines.append("")
    lines += [f"{name:<20}{r['example']}" for name, r in rows.items()]
    return SuiteResult({"scenarios": rows, "step": ctx.step}, "\n".join(lines))
