"""MQAR recall accuracy vs sequence length, for the run's model and (optionally) a baseline run.

``python evaluate.py RUN --suite recall [--opt baseline=runs/Y lengths=64,128,256 batches=4]``
Accuracy = argmax prediction equals the value at every query-answer position.
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from spiraljax.data.recall import MQARDataConfig, mqar_batch
from spiraljax.eval.suites import EvalContext, SuiteResult, register_suite


def recall_accuracy(model, variables, data_cfg: MQARDataConfig, length: int, n_batches: int = 4,
                    batch: int = 16, seed: int = 12345, step: int = 0) -> float:
    apply = jax.jit(lambda t: model.apply(variables, t, train=False, step=step)[0])
    hits = total = 0.0
    for i in range(n_batches):
        b = mqar_batch(seed, i, batch, length, data_cfg.min_pairs, data_cfg.max_pairs, data_cfg.n_keys,
                       data_cfg.n_values)
        pred = np.asarray(jnp.argmax(apply(jnp.asarray(b["inputs"])), axis=-1))
        hits += float(np.sum((pred == b["targets"]) * b["mask"]))
        total += float(np.sum(b["mask"]))
    return hits / max(total, 1.0)


@register_suite("recall")
def recall_suite(ctx: EvalContext) -> SuiteResult:
    cfg = ctx.cfg
    data_cfg = cfg.data if cfg.data.source == "mqar" else MQARDataConfig()
    seq = cfg.model.seq_len
    lengths = [int(x) for x in str(ctx.options.get("lengths", f"{seq // 2},{seq},{seq * 2}")).split(",")]
    n_batches = int(ctx.options.get("batches", 4))
    runs = {f"{cfg.model.family} ({ctx.run_dir.name})": ctx}
    if "baseline" in ctx.options:
        base = EvalContext(Path(ctx.options["baseline"]), ctx.checkpoint, ctx.seed)
        runs[f"{base.cfg.model.family} ({base.run_dir.name})"] = base
    table = {name: {str(n): recall_accuracy(c.model, c.variables, data_cfg, n, n_batches, step=c.step)
                    for n in lengths} for name, c in runs.items()}
    width = max(len(n) for n in table)
    lines = [f"{'model':<{width}}  " + "  ".join(f"T={n:>5}" for n in lengths)]
    for name, accs in table.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{accs[str(n)]:>7.3f}" for n in lengths))
    lines.append(f"(MQAR: {data_cfg.min_pairs}-{data_cfg.max_pairs} key-value pairs, then queries to the end; "
                 f"trained at T={seq})")
    return SuiteResult({"accuracy": table, "lengths": lengths}, "\n".join(lines))
