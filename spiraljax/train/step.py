"""The training loss and the jit-able train step over a plain-dict TrainState (per-token loss and
validation metrics: :mod:`spiraljax.losses`).

State: ``{"params", "opt_state", "step", "rng", "skipped"}``, plus ``"carry"`` (the model's carried
state, ``model.initial_state(B)``) with ``train.carry_state``. Batch: ``inputs``, ``targets``,
``mask`` and extra model kwargs (see :mod:`spiraljax.data.base`); ``reset`` with a carried state.

Carried state (truncated back-propagation through time, docs/carried_state.md): each step
``carry ← stop_gradient(reset_rows(carry, initial_state(B), batch["reset"]))``, the model reads
``state=carry`` and the new carry is ``aux["state"]``; no gradient flows into earlier windows.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from spiraljax.config import Config, ConfigError
from spiraljax.losses import model_extras, token_nll
from spiraljax.state import reset_rows, stop_state

TrainState = dict[str, Any]


def init_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    sample_inputs: jax.Array,
    seed: int,
    carry_batch: int | None = None,
) -> TrainState:
    """The initial train state; with ``carry_batch = B`` it holds ``"carry": model.initial_state(B)``."""
    root = jax.random.key(seed)
    params = model.init(jax.random.fold_in(root, 0), sample_inputs)["params"]
    state = {
        "params": params,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.key_data(jax.random.fold_in(root, 1)),
        "skipped": jnp.zeros((), jnp.int32),
    }
    if carry_batch is not None:
        state["carry"] = model.initial_state(carry_batch)
    return state


def check_carry(cfg: Config, model: nn.Module, batch: dict) -> None:
    """Refuse (one-line ConfigError naming the key) a ``train.carry_state`` run that cannot carry:
    gradient accumulation (micro-batches are not consecutive windows), a family without
    ``initial_state``, or a data source whose batches have no ``reset`` flags."""
    if not cfg.train.carry_state:
        return
    if cfg.train.grad_accum > 1:
        raise ConfigError(
            f"train.carry_state: cannot carry state with train.grad_accum={cfg.train.grad_accum} "
            f"(micro-batches are not consecutive windows); use train.grad_accum=1"
        )
    if not callable(getattr(model, "initial_state", None)):
        raise ConfigError(
            f"train.carry_state: model.family {cfg.model.family!r} has no carried state "
            f"(no initial_state); set train.carry_state=false"
        )
    if "reset" not in batch:
        raise ConfigError(
            f"train.carry_state: data.source {cfg.data.source!r} gives no per-row document "
            f"boundaries (batch key 'reset'); use data.source: longdocs"
        )


def carried_in(model: nn.Module, carry, reset: jax.Array):
    """The state a window starts from: rows that start a document reset, no gradient into the past."""
    return stop_state(reset_rows(carry, model.initial_state(reset.shape[0]), reset))


def _scalar_metrics(aux: dict) -> dict:
    return {
        k: jnp.mean(jnp.asarray(v, jnp.float32), axis=tuple(range(max(jnp.ndim(v) - 1, 0))))
        if jnp.ndim(v) > 1
        else jnp.asarray(v, jnp.float32)
        for k, v in aux.get("metrics", {}).items()
    }


def loss_fn(params, model: nn.Module, batch: dict, step: jax.Array, rng: jax.Array, train: bool = True):
    """Masked mean CE (× aux token_weights × target_weights[targets]) + aux_loss. Returns (loss, (ce, metrics))."""
    loss, (ce, metrics, _) = loss_and_weight(params, model, batch, step, rng, train)
    return loss, (ce, metrics)


def loss_and_weight(params, model: nn.Module, batch: dict, step: jax.Array, rng: jax.Array, train: bool = True):
    """:func:`loss_fn` plus W = Σ mask · token_weights · target_weights[targets] (no gradient), the
    weight of this batch's CE: ce = Σ nll · w / W. Returns (loss, (ce, metrics, W))."""
    loss, (ce, metrics, weight, _) = loss_weight_state(params, model, batch, step, rng, train)
    return loss, (ce, metrics, weight)


def loss_weight_state(
    params, model: nn.Module, batch: dict, step: jax.Array, rng: jax.Array, train: bool = True, state=None
):
    """:func:`loss_and_weight` reading a carried ``state`` (None: none). Returns
    (loss, (ce, metrics, W, the model's output state or None))."""
    k_drop, k_noise, k_sample = jax.random.split(rng, 3)
    carried = {} if state is None else {"state": state}
    logits, aux = model.apply(
        {"params": params},
        batch["inputs"],
        train=train,
        step=step,
        rngs={"dropout": k_drop, "noise": k_noise, "sample": k_sample},
        **model_extras(batch),
        **carried,
    )
    nll = token_nll(logits, batch["targets"])
    mask = batch["mask"].astype(jnp.float32)
    weights = mask * aux["token_weights"] if "token_weights" in aux else mask
    if "target_weights" in aux:  # [V] loss multiplier per target id (Spiralformer rhythmic loss)
        weights = weights * aux["target_weights"][batch["targets"]]
    ce = jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1e-9)
    loss = ce + aux.get("aux_loss", 0.0)
    return loss, (ce, _scalar_metrics(aux), jax.lax.stop_gradient(jnp.sum(weights)), aux.get("state"))


def make_train_step(
    model: nn.Module, tx: optax.GradientTransformation, grad_accum: int = 1, carry_state: bool = False
) -> Callable:
    """Build ``train_step(state, batch) -> (state, metrics)``.

    With ``grad_accum > 1`` every batch entry has a leading micro-step axis (micro-batch i) and
    ``lax.scan`` combines them as one batch holding them all would: loss, CE and gradient are
    Σ_i W_i · x_i / Σ_i W_i with W_i the micro-batch's loss weight (its counted targets, × token and
    target weights), since CE_all = Σ_i Σ nll·w / Σ_i W_i = Σ_i (W_i / W) · CE_i. Exact when the
    weights do not depend on the parameters (masks, breath and target weights); an ``aux_loss`` is
    weighted the same way (equal to the large batch when the W_i are equal, e.g. unmasked text).
    Logged model metrics are the plain mean over micro-batches. A non-finite loss or gradient leaves
    params and optimizer state untouched and increments ``state["skipped"]``.

    Why not ``optax.apply_if_finite``: it checks the gradients only (not the loss) and keeps its
    counters inside the optimizer state, which would change the saved ``opt_state`` tree (existing
    checkpoints would no longer restore) and hide the count from the step's metrics; here the skip
    is four lines, the optimizer state stays plain AdamW, and ``skipped`` is logged every step.

    With ``carry_state`` (``grad_accum`` 1 only) the state's ``"carry"`` is read as described in the
    module docstring and replaced by the model's output state; a skipped (non-finite) step resets
    every row's carry to ``initial_state``, so a non-finite state never propagates.
    """

    if carry_state and grad_accum > 1:
        raise ValueError("carry_state needs grad_accum == 1 (micro-batches are not consecutive windows)")

    def grads_of(params, batch, step, rng):
        """Flat (loss, ce, metrics, grads, W) for one (micro-)batch."""
        (loss, (c, m, w)), g = jax.value_and_grad(loss_and_weight, has_aux=True)(params, model, batch, step, rng)
        return loss, c, m, g, w

    def train_step(state: TrainState, batch: dict):
        step = state["step"]
        rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), step)
        if carry_state:
            carry = carried_in(model, state["carry"], batch["reset"])
            (loss, (ce, metrics, _, new_carry)), grads = jax.value_and_grad(loss_weight_state, has_aux=True)(
                state["params"], model, batch, step, rng, True, carry
            )
        elif grad_accum == 1:
            loss, ce, metrics, grads, _ = grads_of(state["params"], batch, step, rng)
        else:

            def micro(total, xs):
                i, mb = xs
                lo, c, m, g, w = grads_of(state["params"], mb, step, jax.random.fold_in(rng, i))
                weighted = jax.tree.map(lambda x: (w * x).astype(x.dtype), (lo, c, g))
                return jax.tree.map(jnp.add, total, (weighted, m, w)), None

            first = jax.tree.map(lambda x: x[0], batch)
            lo, c, m, g, w = jax.eval_shape(grads_of, state["params"], first, step, rng)
            zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), ((lo, c, g), m, w))
            (weighted, metric_sum, weight), _ = jax.lax.scan(micro, zero, (jnp.arange(grad_accum), batch))
            loss, ce, grads = jax.tree.map(lambda x: x / jnp.maximum(weight, 1e-9), weighted)
            metrics = jax.tree.map(lambda x: x / grad_accum, metric_sum)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, new_opt = tx.update(grads, state["opt_state"], state["params"])
        new_params = optax.apply_updates(state["params"], updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        new_state = {
            "params": keep(new_params, state["params"]),
            "opt_state": keep(new_opt, state["opt_state"]),
            "step": step + 1,
            "rng": state["rng"],
            "skipped": state["skipped"] + (~finite).astype(jnp.int32),
        }
        if carry_state:
            initial = model.initial_state(batch["reset"].shape[0])
            new_state["carry"] = jax.tree.map(
                lambda n, i: jnp.where(finite, n, jnp.asarray(i, n.dtype)), new_carry, initial
            )
        out = {"loss": loss, "ce": ce, "grad_norm": grad_norm, "skipped": new_state["skipped"], **metrics}
        return new_state, out

    return train_step
