"""Causality / intervention harness, for any quantity a model exposes in ``aux`` and
accepts back as ``force_<name>=``.

1. Variance: std over sequences of the per-sequence mean of the quantity > 0.01.
2. Intervention: force it to each value (default 0.1 … 0.9); mean |Δlogits| between settings > 0.1
   and a paired t-test (over sequences) of the NLL at the lowest vs highest setting has p < 0.01.
3. Correlation: Pearson r between the quantity at t and the next-token entropy at t: |r| > 0.05, p < 0.01.

Forcing is checked, not assumed: for every forced value the suite reports the value the model then
really used (``aux[quantity + "_readout"]`` where the model exposes it — for K-SSM, R recomputed
from the features its readout receives — else ``aux[quantity]``), and labels the NLL table with it.
It also reports the quantity's *share* of the output's token dependence (:func:`share_of_dependence`).

If the model also accepts ``cut_<name>=True`` the same tests run on that control, which must fail
test 2 — proving the test can fail.

``python evaluate.py RUN --suite causality [--opt quantity=R values=0.1,0.3,0.5,0.7,0.9 sequences=100]``
"""

from __future__ import annotations

import inspect
from itertools import combinations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from spiraljax.eval.contemplative import entropy
from spiraljax.eval.lm import validation_batches
from spiraljax.eval.suites import EvalContext, Option, SuiteResult, register_suite
from spiraljax.losses import model_extras, token_nll

THRESHOLDS = {"variance_std": 0.01, "delta_logits": 0.1, "t_test_p": 0.01, "abs_r": 0.05, "r_p": 0.01}


def accepts(model, keyword: str) -> bool:
    return keyword in inspect.signature(type(model).__call__).parameters


def pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pearson r and its p-value; a constant series (e.g. a fixed plasticity α) is uncorrelated: (0, 1)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0, 1.0
    r, p = stats.pearsonr(x, y)
    return (float(r), float(p)) if np.isfinite(r) else (0.0, 1.0)


def token_dependence(logp: np.ndarray, mask: np.ndarray) -> float:
    """How much the (log-softmax) outputs ``[S, T, V]`` depend on the input sequence: the variance over
    sequences at each position, summed over the vocabulary and averaged over positions (``mask [S, T]``
    weights the sequences; a position with fewer than two sequences counts 0)."""
    w = mask[..., None].astype(np.float64)
    n = np.sum(w, axis=0)  # [T, 1]
    mean = np.sum(w * logp, axis=0) / np.maximum(n, 1.0)  # [T, V]
    var = np.sum(w * (logp - mean) ** 2, axis=0) / np.maximum(n, 1.0)
    per_pos = np.where(n[:, 0] > 1, np.sum(var, axis=-1), 0.0)  # [T]
    return float(np.mean(per_pos))


def share_of_dependence(natural: np.ndarray, ablated: np.ndarray, mask: np.ndarray) -> float:
    """``1 − D(ℓ_c) / D(ℓ)``: the share of the outputs' dependence on the tokens that disappears when the
    quantity is held at a constant c, with D = :func:`token_dependence` and ℓ = log-softmax outputs.

    Why this form: per position t, ``E_x ‖ℓ_t(x) − E_x ℓ_t(x)‖²`` is the part of the output that changes
    with the input x (the position's average, which no token moves, is removed); log-softmax removes
    the logits' free additive constant, which changes no prediction. Holding the quantity at its
    dataset mean (a mean ablation) removes what flows through it and keeps the model in its operating
    range: share 1 means every token dependence passes through the quantity, 0 none (negative: the
    ablation made the outputs depend on the tokens more)."""
    base = token_dependence(natural, mask)
    return float(1.0 - token_dependence(ablated, mask) / base) if base > 0 else 0.0


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - np.max(logits, axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def run_tests(
    model, variables, batches: list[dict], quantity: str, values: list[float], step: int = 0, **model_kwargs
) -> dict:
    """All three tests on ``batches``, the achieved value for every forced one and the quantity's share
    of the token dependence (held at its mean); returns numbers and pass/fail per test."""
    force_kw = f"force_{quantity}"

    @jax.jit
    def forward(batch, force):
        kw = {force_kw: force} if force is not None else {}
        logits, aux = model.apply(
            variables, batch["inputs"], train=False, step=step, **model_extras(batch), **kw, **model_kwargs
        )
        nll = jnp.sum(token_nll(logits, batch["targets"]) * batch["mask"], axis=1) / jnp.maximum(
            jnp.sum(batch["mask"], axis=1), 1.0
        )
        seen = aux.get(f"{quantity}_readout", aux[quantity])
        return (
            logits,
            jnp.broadcast_to(aux[quantity], batch["inputs"].shape),
            entropy(logits),
            nll,
            jnp.broadcast_to(seen, batch["inputs"].shape),
        )

    q_seq, q_all, ent_all, natural = [], [], [], []
    for batch in batches:
        logits, q, ent, _, _ = forward(batch, None)
        q_seq.append(np.asarray(jnp.mean(q, axis=1)))
        q_all.append(np.asarray(q).ravel())
        ent_all.append(np.asarray(ent).ravel())
        natural.append(np.asarray(logits))
    q_seq = np.concatenate(q_seq)
    q_all, ent_all = np.concatenate(q_all), np.concatenate(ent_all)
    mean_q = float(np.mean(q_all))
    settings = list(dict.fromkeys([*values, mean_q]))
    forced = {v: {"logits": [], "nll": [], "seen": []} for v in settings}
    for batch in batches:
        for v in settings:
            logits, _, _, nll, seen = forward(batch, jnp.float32(v))
            forced[v]["logits"].append(np.asarray(logits))
            forced[v]["nll"].append(np.asarray(nll))
            forced[v]["seen"].append(np.asarray(seen)[np.asarray(batch["mask"]) > 0])
    mask = np.concatenate([np.asarray(b["mask"]) for b in batches])
    natural_logp = _log_softmax(np.concatenate(natural))
    share = {
        str(v): share_of_dependence(natural_logp, _log_softmax(np.concatenate(forced[v]["logits"])), mask)
        for v in settings
    }
    seen = {v: np.concatenate(forced[v]["seen"]) for v in settings}
    deltas = [
        float(np.mean(np.abs(np.concatenate(forced[a]["logits"]) - np.concatenate(forced[b]["logits"]))))
        for a, b in combinations(values, 2)
    ]
    nll_lo, nll_hi = np.concatenate(forced[values[0]]["nll"]), np.concatenate(forced[values[-1]]["nll"])
    t_p = float(stats.ttest_rel(nll_lo, nll_hi).pvalue) if np.any(nll_lo != nll_hi) else 1.0
    r, r_p = pearson(q_all, ent_all)
    out = {
        "variance": {"std_of_sequence_means": float(np.std(q_seq)), "mean": float(np.mean(q_seq))},
        "intervention": {
            "values": values,
            "mean_abs_delta_logits": float(np.mean(deltas)),
            "nll_by_value": {str(v): float(np.mean(np.concatenate(forced[v]["nll"]))) for v in values},
            "achieved_by_value": {str(v): float(np.mean(seen[v])) for v in values},
            "max_abs_achieved_error": max(float(np.max(np.abs(seen[v] - v))) for v in values),
            "paired_t_p": t_p,
        },
        "correlation": {"pearson_r": float(r), "p": float(r_p), "positions": int(len(q_all))},
        "share": {
            "held_at": mean_q,
            "share": share[str(mean_q)],
            "by_forced_value": {str(v): share[str(v)] for v in values},
        },
    }
    out["variance"]["passed"] = out["variance"]["std_of_sequence_means"] > THRESHOLDS["variance_std"]
    out["intervention"]["passed"] = (
        out["intervention"]["mean_abs_delta_logits"] > THRESHOLDS["delta_logits"] and t_p < THRESHOLDS["t_test_p"]
    )
    out["correlation"]["passed"] = abs(r) > THRESHOLDS["abs_r"] and r_p < THRESHOLDS["r_p"]
    return out


def _format(title: str, res: dict, quantity: str) -> list[str]:
    ok = lambda b: "PASS" if b else "FAIL"  # noqa: E731
    v, i, c, s = res["variance"], res["intervention"], res["correlation"], res["share"]
    th = THRESHOLDS
    nll = ", ".join(f"{k} → {i['achieved_by_value'][k]:.3f}: {x:.3f}" for k, x in i["nll_by_value"].items())
    return [
        f"{title}",
        f"  1 variance      std of per-sequence means = {v['std_of_sequence_means']:.4f} "
        f"(> {th['variance_std']})   {ok(v['passed'])}   [mean {v['mean']:.3f}]",
        f"  2 intervention  mean |Δlogits| = {i['mean_abs_delta_logits']:.4f} (> {th['delta_logits']}), "
        f"paired t-test p = {i['paired_t_p']:.2e} (< {th['t_test_p']})   {ok(i['passed'])}",
        f"                  NLL by forced → achieved {quantity}: {nll}",
        f"                  max |achieved − forced| = {i['max_abs_achieved_error']:.4f}",
        f"  3 correlation   r(quantity, entropy) = {c['pearson_r']:+.4f} (|r| > {th['abs_r']}), p = {c['p']:.2e} "
        f"(< {th['r_p']}) over {c['positions']} positions   {ok(c['passed'])}",
        f"  {quantity} share      {s['share']:.3f} of the outputs' token dependence disappears with {quantity} "
        f"held at its mean {s['held_at']:.3f}",
    ]


# --opt: the quantity forced (K-SSM's order parameter R), the values it is forced to, sequences tested
@register_suite(
    "causality",
    options={
        "quantity": Option(str, "R"),
        "values": Option(list[float], [0.1, 0.3, 0.5, 0.7, 0.9]),
        "sequences": Option(int, 100, minimum=1),
    },
    fits=lambda ctx, options: accepts(ctx.model, f"force_{options['quantity']}"),
    requires="a model that accepts force_<quantity> (--opt quantity=, default R)",
)
def causality_suite(ctx: EvalContext, *, quantity: str, values: list[float], sequences: int) -> SuiteResult:
    if len(values) < 2:
        raise KeyError(f"--opt values={values}: needs at least two values to compare")
    if quantity == "R" and not all(0.0 <= v <= 1.0 for v in values):
        raise KeyError(f"--opt values: an order parameter R lies in [0, 1], got {values}")
    n_sequences = sequences
    model = ctx.model
    if not accepts(model, f"force_{quantity}"):
        raise KeyError(f"model family {ctx.cfg.model.family!r} does not accept force_{quantity}")
    batches = validation_batches(ctx.dataset, n_sequences, repeat=True)  # the paired tests want the count
    main = run_tests(model, ctx.variables, batches, quantity, values, ctx.step)
    data = {"quantity": quantity, "model": main, "thresholds": THRESHOLDS}
    lines = _format(f"model (step {ctx.step}), quantity {quantity}:", main, quantity)
    passed = all(main[k]["passed"] for k in ("variance", "intervention", "correlation"))
    if accepts(model, f"cut_{quantity}"):
        control = run_tests(model, ctx.variables, batches, quantity, values, ctx.step, **{f"cut_{quantity}": True})
        data["control"] = control
        lines += [""] + _format(f"control ({quantity} path cut) — must FAIL test 2:", control, quantity)
        data["control_fails_intervention"] = not control["intervention"]["passed"]
        passed = passed and data["control_fails_intervention"]
        lines.append(f"\ncontrol fails the intervention test: {data['control_fails_intervention']}")
    lines.append(f"all criteria met: {passed}")
    return SuiteResult(data, "\n".join(lines), passed)
