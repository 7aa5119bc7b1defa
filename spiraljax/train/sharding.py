"""Device mesh and shardings (``jax.make_mesh`` + ``NamedSharding``); one device is the trivial mesh.

The batch is split over the ``data`` axis; parameters and optimizer state are replicated.
A ``model`` axis exists from the start so model parallelism later adds partition specs, not a rewrite.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from spiraljax.config import ConfigError, MeshConfig


def make_mesh(cfg: MeshConfig, batch_size: int) -> Mesh:
    n = jax.device_count()
    model = cfg.model
    data = cfg.data if cfg.data > 0 else n // model
    if data * model != n:
        raise ConfigError(f"mesh: data={data} x model={model} does not match {n} devices")
    if batch_size % data:
        raise ConfigError(f"train.batch_size={batch_size} is not divisible by mesh.data={data}")
    auto = (jax.sharding.AxisType.Auto,) * 2  # let XLA propagate shardings from the inputs
    return jax.make_mesh((data, model), ("data", "model"), axis_types=auto)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, leading_dims: int = 0) -> NamedSharding:
    """Shard axis ``leading_dims`` (the batch axis) over ``data``; earlier axes (micro-steps) stay whole."""
    return NamedSharding(mesh, P(*([None] * leading_dims), "data"))


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh, leading_dims: int = 0) -> dict[str, jax.Array]:
    """Place a host batch (identical on every process) onto the mesh, split over ``data``.

    Multi-process: each process contributes its slice of the global batch.
    """
    sharding = batch_sharding(mesh, leading_dims)
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)
        if v.ndim <= leading_dims:  # scalars / per-step values: replicate
            out[k] = jax.device_put(v, replicated(mesh))
        elif jax.process_count() == 1:
            out[k] = jax.device_put(v, sharding)
        else:
            rows = v.shape[leading_dims] // jax.process_count()
            lo = jax.process_index() * rows
            local = np.take(v, np.arange(lo, lo + rows), axis=leading_dims)
            out[k] = jax.make_array_from_process_local_data(sharding, local, v.shape)
    return out
