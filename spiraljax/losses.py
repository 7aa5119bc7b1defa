"""Per-token loss and language-model metrics, shared by training and evaluation.

Neither ``spiraljax.train`` nor ``spiraljax.eval`` owns these: both import them from here, so the two
packages never import each other for a loss.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from spiraljax.data.base import BATCH_KEYS, STREAM_KEYS
from spiraljax.state import reset_rows

__all__ = ["evaluate_lm", "lm_metrics", "make_eval_step", "model_extras", "token_nll"]


def model_extras(batch: dict) -> dict:
    """Batch entries that are model keyword arguments (everything but inputs/targets/mask and the
    document-stream keys reset/doc_pos)."""
    return {k: v for k, v in batch.items() if k not in BATCH_KEYS and k not in STREAM_KEYS}


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """``−log softmax(logits)[target]`` per token, in nats, computed in fp32.

    Args:
      logits: ``[..., V]`` (any float dtype).
      targets: ``[...]`` integer ids.

    Returns:
      ``[...]`` float32 negative log-likelihoods.
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


def make_eval_step(model: nn.Module, token_bytes: jax.Array, carry_state: bool = False) -> Callable:
    """``eval_step(params, batch, step) -> {nll_sum, tokens, bytes}`` (plain, unweighted CE).

    ``bytes`` is ``Σ mask · token_bytes[target]``: the text bytes the counted targets stand for.
    With ``carry_state``: ``eval_step(params, batch, step, state) -> (sums, new_state)``, where rows
    with ``batch["reset"]`` first restart from ``model.initial_state``.
    """
    token_bytes = jnp.asarray(token_bytes, jnp.float32)

    def sums(logits, batch):
        nll = token_nll(logits, batch["targets"])
        mask = batch["mask"].astype(jnp.float32)
        return {
            "nll_sum": jnp.sum(nll * mask),
            "tokens": jnp.sum(mask),
            "bytes": jnp.sum(mask * token_bytes[batch["targets"]]),
        }

    def eval_step(params, batch: dict, step):
        logits, _ = model.apply({"params": params}, batch["inputs"], train=False, step=step, **model_extras(batch))
        return sums(logits, batch)

    def carried_eval_step(params, batch: dict, step, state):
        state = reset_rows(state, model.initial_state(batch["reset"].shape[0]), batch["reset"])
        logits, aux = model.apply(
            {"params": params}, batch["inputs"], train=False, step=step, state=state, **model_extras(batch)
        )
        return sums(logits, batch), aux["state"]

    return carried_eval_step if carry_state else eval_step


def lm_metrics(nll_sum: float, tokens: float, n_bytes: float) -> dict[str, float]:
    """loss = Σ nll / tokens (nats/token), BPC = Σ nll / (ln 2 · bytes), PPL = exp(loss)."""
    loss = nll_sum / max(tokens, 1e-9)
    return {"loss": loss, "bpc": nll_sum / (math.log(2) * max(n_bytes, 1e-9)), "ppl": math.exp(min(loss, 700.0))}


def evaluate_lm(
    model: nn.Module, params: Any, dataset, step: int = 0, eval_step: Callable | None = None, carry_state: bool = False
) -> dict:
    """Validation metrics over ``dataset.val_batches()`` (a fixed set of batches).

    Args:
      model: the Flax module; params: its parameters; dataset: anything with ``val_batches()`` and
      ``token_bytes``; step: passed to the model (breath clock, curricula); eval_step: a jitted
      :func:`make_eval_step` to reuse (built and compiled here when None; with ``carry_state`` it
      must be the carrying one); carry_state: carry the model's state from each validation batch to
      the next (the batches are consecutive windows of each row's documents; ``reset`` restarts a row).

    Returns:
      ``{"loss", "bpc", "ppl", "tokens"}`` (see :func:`lm_metrics`).
    """
    eval_step = eval_step or jax.jit(make_eval_step(model, dataset.token_bytes, carry_state))
    totals = {"nll_sum": 0.0, "tokens": 0.0, "bytes": 0.0}
    state = None
    for batch in dataset.val_batches():
        if carry_state:
            if state is None:
                state = model.initial_state(len(batch["reset"]))
            out, state = eval_step(params, batch, step, state)
            out = jax.device_get(out)
        else:
            out = jax.device_get(eval_step(params, batch, step))
        for k in totals:
            totals[k] += float(out[k])
    return {**lm_metrics(totals["nll_sum"], totals["tokens"], totals["bytes"]), "tokens": totals["tokens"]}
