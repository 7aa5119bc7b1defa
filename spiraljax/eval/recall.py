"""MQAR recall accuracy vs sequence length and vs number of pairs, for the run's model and baselines.

``python evaluate.py RUN --suite recall [--opt baseline=runs/Y[,runs/Z] lengths=64,128,256 batches=4
pairs=4,8,16 pairs_length=128 plasticity=0.1,0.99]``

Accuracy = the argmax prediction equals the stored value at every query-answer position. Besides it
the suite reports, on the same batches, the accuracy on *first* queries only (the key was not asked
before in the query section, so the answer can only come from the key–value pairs) and the
reference "guess among the values present": a model that knows which values the pairs hold but not
which key they belong to scores ``mean over queries of 1 / #distinct values in the pairs``.
``plasticity=a,b`` also evaluates every model that accepts ``force_plasticity`` at those forced α.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from spiraljax.data.recall import MQARDataConfig, mqar_batch
from spiraljax.eval.suites import EvalContext, Option, SuiteResult, register_suite


def first_query_mask(inputs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``mask`` restricted to queries whose key has not been queried earlier in the sequence."""
    first = np.zeros_like(mask)
    for row in range(inputs.shape[0]):
        seen: set[int] = set()
        for pos in np.flatnonzero(mask[row]):
            key = int(inputs[row, pos])
            if key not in seen:
                first[row, pos] = 1.0
                seen.add(key)
    return first


def guess_present_accuracy(inputs: np.ndarray, mask: np.ndarray) -> float:
    """Expected accuracy of guessing uniformly among the distinct values stored in the pairs."""
    num = den = 0.0
    for row in range(inputs.shape[0]):
        queries = np.flatnonzero(mask[row])
        if len(queries) == 0:
            continue
        values = set(int(v) for v in inputs[row, 1 : queries[0] : 2])
        num += len(queries) / max(len(values), 1)
        den += len(queries)
    return num / max(den, 1.0)


def recall_stats(
    model,
    variables,
    data_cfg: MQARDataConfig,
    length: int,
    n_batches: int = 4,
    batch: int = 16,
    seed: int = 12345,
    step: int = 0,
    pairs: int | None = None,
    force_plasticity: float | None = None,
) -> dict[str, float]:
    """``{"accuracy", "first_accuracy", "guess_present"}`` over ``n_batches`` MQAR batches of ``length``
    (``pairs`` fixes the number of key–value pairs; default: the data config's range), plus
    ``"plasticity"``: the α the model reports in ``aux["plasticity"]`` (the forced one, if it reached
    the model), where it has one."""
    kwargs = {} if force_plasticity is None else {"force_plasticity": force_plasticity}

    @jax.jit
    def apply(tokens):
        logits, aux = model.apply(variables, tokens, train=False, step=step, **kwargs)
        return jnp.argmax(logits, axis=-1), {k: jnp.mean(aux[k]) for k in ("plasticity",) if k in aux}

    lo, hi = (pairs, pairs) if pairs is not None else (data_cfg.min_pairs, data_cfg.max_pairs)
    hits = total = first_hits = first_total = guess = 0.0
    used: list[float] = []
    for i in range(n_batches):
        b = mqar_batch(seed, i, batch, length, lo, hi, data_cfg.n_keys, data_cfg.n_values)
        pred, aux = apply(jnp.asarray(b["inputs"]))
        pred = np.asarray(pred)
        used += [float(aux["plasticity"])] if "plasticity" in aux else []
        right = pred == b["targets"]
        first = first_query_mask(b["inputs"], b["mask"])
        hits += float(np.sum(right * b["mask"]))
        total += float(np.sum(b["mask"]))
        first_hits += float(np.sum(right * first))
        first_total += float(np.sum(first))
        guess += guess_present_accuracy(b["inputs"], b["mask"]) * float(np.sum(b["mask"]))
    return {
        "accuracy": hits / max(total, 1.0),
        "first_accuracy": first_hits / max(first_total, 1.0),
        "guess_present": guess / max(total, 1.0),
        **({"plasticity": float(np.mean(used))} if used else {}),
    }


def _table(title: str, columns: list, rows: dict[str, dict[str, float]], head: str) -> list[str]:
    width = max([len(n) for n in rows] + [len("model")])
    lines = [title, f"{'model':<{width}}  " + "  ".join(f"{head}={c:>5}" for c in columns)]
    for name, accs in rows.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{accs[str(c)]:>{len(head) + 6}.3f}" for c in columns))
    return lines


# --opt (module docstring); lengths default to seq_len/2, seq_len, 2·seq_len and pairs_length to seq_len
@register_suite(
    "recall",
    sources=("mqar",),
    options={
        "lengths": Option(list[int], minimum=1),
        "pairs": Option(list[int], [], minimum=1),
        "pairs_length": Option(int, minimum=1),
        "plasticity": Option(list[float], []),
        "batches": Option(int, 4, minimum=1),
        "baseline": Option(list[str], []),
    },
)
def recall_suite(
    ctx: EvalContext,
    *,
    lengths: list[int] | None,
    pairs: list[int],
    pairs_length: int | None,
    plasticity: list[float],
    batches: int,
    baseline: list[str],
) -> SuiteResult:
    cfg = ctx.cfg
    data_cfg = cfg.data if cfg.data.source == "mqar" else MQARDataConfig()
    seq = cfg.model.seq_len
    lengths = lengths or [seq // 2, seq, seq * 2]
    pair_counts, forced, n_batches = pairs, plasticity, batches
    pairs_length = pairs_length or seq
    runs = {f"{cfg.model.family} ({ctx.run_dir.name})": ctx}
    for path in baseline:
        base = EvalContext(Path(path), ctx.checkpoint, ctx.seed)
        runs[f"{base.cfg.model.family} ({base.run_dir.name})"] = base
    settings: dict[str, tuple] = {}
    for name, c in runs.items():
        settings[name] = (c, None)
        if forced and "force_plasticity" in inspect.signature(type(c.model).__call__).parameters:
            for a in forced:
                settings[f"{name} α={a:g}"] = (c, a)

    def stats(c, alpha, length, pairs=None):
        return recall_stats(
            c.model, c.variables, data_cfg, length, n_batches, step=c.step, pairs=pairs, force_plasticity=alpha
        )

    by_length = {name: {str(n): stats(c, a, n) for n in lengths} for name, (c, a) in settings.items()}
    table = {name: {k: v["accuracy"] for k, v in r.items()} for name, r in by_length.items()}
    first = {name: {k: v["first_accuracy"] for k, v in r.items()} for name, r in by_length.items()}
    guess = {str(n): next(iter(by_length.values()))[str(n)]["guess_present"] for n in lengths}
    lines = _table("accuracy on all queries", lengths, table, "T")
    lines += _table("accuracy on first queries (answer only in the pairs)", lengths, first, "T")
    lines.append("guess among present values: " + "  ".join(f"T={n}: {guess[str(n)]:.3f}" for n in lengths))
    data = {"accuracy": table, "first_accuracy": first, "guess_present": guess, "lengths": lengths}
    first_cell = {name: r[str(lengths[0])] for name, r in by_length.items()}
    used = {name: cell["plasticity"] for name, cell in first_cell.items() if "plasticity" in cell}
    if forced and used:
        data["plasticity_used"] = used
        lines.append("plasticity α the model used: " + ", ".join(f"{name}: {a:.3f}" for name, a in used.items()))
    if pair_counts:
        by_pairs = {
            name: {str(p): stats(c, a, pairs_length, p) for p in pair_counts} for name, (c, a) in settings.items()
        }
        data["by_pairs"] = {name: {k: v["accuracy"] for k, v in r.items()} for name, r in by_pairs.items()}
        data["by_pairs_first"] = {name: {k: v["first_accuracy"] for k, v in r.items()} for name, r in by_pairs.items()}
        data["pairs_guess_present"] = {
            str(p): next(iter(by_pairs.values()))[str(p)]["guess_present"] for p in pair_counts
        }
        data["pairs"], data["pairs_length"] = pair_counts, pairs_length
        lines += _table(
            f"accuracy vs number of pairs at T={pairs_length} (capped at {max(1, (pairs_length - 2) // 4)})",
            pair_counts,
            data["by_pairs"],
            "n",
        )
        lines.append(
            "guess among present values: "
            + "  ".join(f"n={p}: {data['pairs_guess_present'][str(p)]:.3f}" for p in pair_counts)
        )
        lines += _table(
            f"accuracy on first queries vs number of pairs at T={pairs_length}",
            pair_counts,
            data["by_pairs_first"],
            "n",
        )
    lines.append(
        f"(MQAR: {data_cfg.min_pairs}-{data_cfg.max_pairs} key-value pairs, then queries to the end; "
        f"trained at T={seq}; chance 1/{data_cfg.n_values})"
    )
    return SuiteResult(data, "\n".join(lines))
