"""One setup path: config → dataset, model, optimizer, mesh, (abstract) initial state, jitted train step.

The training loop, the report's memory measurement and the benchmarks all build a run's pieces here,
so the step they time or measure is the step the loop runs. Everything in :func:`setup` is checked
before any file is written: a bad config, a missing corpus or an unencodable sample prompt fails
here (one line), before the run directory exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from spiraljax.config import Config
from spiraljax.data.base import DataError, build_dataset
from spiraljax.models import build
from spiraljax.train.optim import make_optimizer
from spiraljax.train.sharding import batch_shardings, make_mesh, replicated, state_shardings
from spiraljax.train.step import TrainState, check_carry, init_state, make_train_step


def batch_for_step(dataset, step: int, grad_accum: int) -> dict[str, np.ndarray]:
    """The host batch of ``step``: the dataset's batch, or ``grad_accum`` micro-batches stacked on a
    leading axis (micro-batch i of step s is the dataset's batch ``s·grad_accum + i``)."""
    if grad_accum == 1:
        return dataset.train_batch(step)
    micro = [dataset.train_batch(step * grad_accum + i) for i in range(grad_accum)]
    return {k: np.stack([m[k] for m in micro]) for k in micro[0]}


@dataclass(frozen=True)
class Setup:
    """Everything built from a config before training: see :func:`setup`."""

    cfg: Config
    dataset: Any
    model: Any
    tx: optax.GradientTransformation
    mesh: Mesh | None
    sample_inputs: np.ndarray
    abstract_state: TrainState

    @property
    def carry_batch(self) -> int | None:
        """The batch size of the carried state (``train.carry_state``), or None."""
        return self.cfg.train.batch_size if self.cfg.train.carry_state else None

    @property
    def lead(self) -> int:
        """Leading micro-step axes of a batch (1 with ``train.grad_accum > 1``)."""
        return 1 if self.cfg.train.grad_accum > 1 else 0

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """The host batch of ``step`` as the loop feeds it (:func:`batch_for_step`)."""
        return batch_for_step(self.dataset, step, self.cfg.train.grad_accum)

    def state_shardings(self):
        """Per-leaf ``NamedSharding`` of the train state on the mesh (None without a mesh)."""
        return None if self.mesh is None else state_shardings(self.abstract_state, self.mesh)

    def init_state(self, seed: int | None = None, carry: bool = True) -> TrainState:
        """The initial train state (``init_state`` jitted; sharded on the mesh where there is one).

        ``seed`` defaults to ``train.seed``; ``carry=False`` leaves out the carried state."""
        seed = self.cfg.train.seed if seed is None else seed
        carry_batch = self.carry_batch if carry else None
        init = jax.jit(
            lambda x: init_state(self.model, self.tx, x, seed, carry_batch), out_shardings=self.state_shardings()
        )
        return init(self.sample_inputs)

    @property
    def step_fn(self) -> Callable:
        """``train_step(state, batch) -> (state, metrics)`` of the config (not jitted)."""
        tc = self.cfg.train
        return make_train_step(self.model, self.tx, tc.grad_accum, tc.carry_state)

    def jit_step(self, donate: bool = True) -> Callable:
        """:attr:`step_fn` jitted as the loop runs it: the state donated, and on a mesh the state's and
        the batch's shardings in, the state's sharding and replicated metrics out."""
        donate_argnums = 0 if donate else ()
        if self.mesh is None:
            return jax.jit(self.step_fn, donate_argnums=donate_argnums)
        shardings = self.state_shardings()
        batch_specs = batch_shardings(self.batch(0), self.mesh, self.lead)
        return jax.jit(
            self.step_fn,
            donate_argnums=donate_argnums,
            in_shardings=(shardings, batch_specs),
            out_shardings=(shardings, replicated(self.mesh)),
        )


def setup(cfg: Config, *, mesh: bool = True) -> Setup:
    """Build data, model, optimizer (and with ``mesh`` the device mesh) of ``cfg`` and trace the initial
    state's shapes (``jax.eval_shape``: nothing is computed).

    Raises ConfigError / DataError (one line) for a bad config, a missing corpus, a sample prompt the
    data cannot encode or a carried state the model does not support.
    """
    tc = cfg.train
    dataset = build_dataset(cfg)
    if cfg.eval.sample_tokens and cfg.eval.sample_prompt:
        try:
            dataset.encode(cfg.eval.sample_prompt)
        except DataError as err:
            raise DataError(f"eval.sample_prompt: {err}") from None
    model = build(cfg.model)
    first = dataset.train_batch(0)
    check_carry(cfg, model, first)
    device_mesh = make_mesh(cfg.mesh, tc.batch_size) if mesh else None
    tx = make_optimizer(tc)
    sample_inputs = np.asarray(first["inputs"][:1])
    carry_batch = tc.batch_size if tc.carry_state else None
    abstract = jax.eval_shape(lambda x: init_state(model, tx, x, tc.seed, carry_batch), sample_inputs)
    return Setup(cfg, dataset, model, tx, device_mesh, sample_inputs, abstract)
