"""Validation loss, BPC (bits/glyph on glyph data) and perplexity over a dataset's fixed validation batches;
the first validation batches for the suites that read a share of them."""

from __future__ import annotations

from spiraljax.data.base import loss_unit, metric_unit
from spiraljax.errors import DataError
from spiraljax.eval.suites import EvalContext, SuiteResult, register_suite
from spiraljax.losses import evaluate_lm


def validation_batches(dataset, n_sequences: int, repeat: bool = False) -> list[dict]:
    """The first validation batches holding at least ``n_sequences`` sequences. A smaller split gives
    what it has, or with ``repeat`` is read again from its start until there are enough. An empty
    split is a one-line DataError."""
    batches, n = [], 0
    while n < n_sequences:
        before = n
        for batch in dataset.val_batches():
            if n >= n_sequences:
                break
            batches.append(batch)
            n += len(batch["inputs"])
        if n == before:
            raise DataError("the dataset has no validation batches")
        if not repeat:
            break
    return batches


@register_suite("lm", options={})
def lm_suite(ctx: EvalContext) -> SuiteResult:
    carry = ctx.cfg.train.carry_state  # a run trained with carried state is validated the same way
    m = evaluate_lm(ctx.model, ctx.variables["params"], ctx.dataset, ctx.step, carry_state=carry)
    unit = metric_unit(ctx.dataset)  # the key stays "bpc"; "unit" says what it counts
    text = (
        f"validation ({int(m['tokens'])} tokens, step {ctx.step}{', state carried' if carry else ''})\n"
        f"  loss {m['loss']:.4f} {loss_unit(unit)}   {unit} {m['bpc']:.4f}   PPL {m['ppl']:.2f}"
    )
    sha = getattr(ctx.dataset, "sha256", None)  # a corpus that names its content (longdocs)
    if sha is not None:
        text += f"\n  corpus sha256 {sha}"
    return SuiteResult({**m, "unit": unit, "step": ctx.step, **({"data_sha256": sha} if sha else {})}, text)
