"""Validation loss, BPC (bits/glyph on glyph data) and perplexity over a dataset's fixed validation batches."""
from __future__ import annotations

from typing import Any

import jax

from spiraljax.data.base import metric_unit
from spiraljax.eval.suites import EvalContext, SuiteResult, register_suite
from spiraljax.train.step import lm_metrics, make_eval_step


def evaluate_lm(model, params: Any, dataset, step: int = 0, eval_step=None) -> dict[str, float]:
    """Sum NLL, tokens and bytes over ``dataset.val_batches()`` → loss / bpc / ppl."""
    eval_step = eval_step or jax.jit(make_eval_step(model, dataset.token_bytes))
    totals = {"nll_sum": 0.0, "tokens": 0.0, "bytes": 0.0}
    for batch in dataset.val_batches():
        out = jax.device_get(eval_step(params, batch, step))
        for k in totals:
            totals[k] += float(out[k])
    return {**lm_metrics(totals["nll_sum"], totals["tokens"], totals["bytes"]), "tokens": totals["tokens"]}


@register_suite("lm", options={})
def lm_suite(ctx: EvalContext) -> SuiteResult:
    m = evaluate_lm(ctx.model, ctx.variables["params"], ctx.dataset, ctx.step)
    unit = metric_unit(ctx.dataset)  # the key stays "bpc"; "unit" says what it counts
    text = (f"validation ({int(m['tokens'])} tokens, step {ctx.step})\n"
            f"  loss {m['loss']:.4f} nats/token   {unit} {m['bpc']:.4f}   PPL {m['ppl']:.2f}")
    return SuiteResult({**m, "unit": unit, "step": ctx.step}, text)
