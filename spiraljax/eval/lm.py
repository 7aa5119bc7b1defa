"""Validation loss, BPC (bits/glyph on glyph data) and perplexity over a dataset's fixed validation batches."""
from __future__ import annotations

from spiraljax.data.base import loss_unit, metric_unit
from spiraljax.eval.suites import EvalContext, SuiteResult, register_suite
from spiraljax.losses import evaluate_lm


@register_suite("lm", options={})
def lm_suite(ctx: EvalContext) -> SuiteResult:
    m = evaluate_lm(ctx.model, ctx.variables["params"], ctx.dataset, ctx.step)
    unit = metric_unit(ctx.dataset)  # the key stays "bpc"; "unit" says what it counts
    text = (f"validation ({int(m['tokens'])} tokens, step {ctx.step})\n"
            f"  loss {m['loss']:.4f} {loss_unit(unit)}   {unit} {m['bpc']:.4f}   PPL {m['ppl']:.2f}")
    return SuiteResult({**m, "unit": unit, "step": ctx.step}, text)
