"""Device mesh and shardings (``jax.make_mesh`` + ``NamedSharding``); one device is the trivial mesh.

The mesh has three axes, ``("data", "fsdp", "model")``:

* the batch is split over ``data × fsdp``;
* **FSDP**: every parameter and optimizer-state leaf is split over ``fsdp`` along its largest axis
  that the ``fsdp`` size divides (XLA gathers it for the matmul and reduce-scatters the gradient);
* **tensor parallel**: attention and MLP kernels are split over ``model`` — input projections
  (``qkv``, ``q``/``k``/``v``, MLP ``up``/``gate``) along their output heads/units, output
  projections (``out``, MLP ``down``) along their input heads/units (Megatron's column/row split).

The partition specs are derived from each leaf's path and shape (:func:`leaf_spec`), so no model
code names an axis, and the optimizer state (whose AdamW moments mirror the parameter tree) gets the
same specs. Sharding never changes the math: a sharded step equals the one-device step up to
floating-point reassociation (tested on 4 CPU devices).
"""

from __future__ import annotations

import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from spiraljax.config import ConfigError, MeshConfig

AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")

# Tensor-parallel rules on the "/"-joined parameter path (matched at its end, so optimizer-state
# leaves such as ".../mu/block_0/attn/qkv/kernel" match too).
COLUMN_PARALLEL = re.compile(r"(^|/)((attn|swa|memory)/(qkv|q|k|v)|mlp/(up|gate))/kernel$")
ROW_PARALLEL = re.compile(r"(^|/)((attn|swa|memory)/out|mlp/down)/kernel$")


def make_mesh(cfg: MeshConfig, batch_size: int) -> Mesh:
    """The ``(data, fsdp, model)`` mesh over the devices; ``data = -1`` takes all remaining devices.

    A mesh smaller than the device count (explicit sizes) uses the first devices (one process only).
    """
    n = jax.device_count()
    inner = cfg.fsdp * cfg.model
    data = cfg.data if cfg.data > 0 else n // inner
    total = data * cfg.fsdp * cfg.model
    if data < 1 or total > n or (total < n and (cfg.data <= 0 or jax.process_count() > 1)):
        raise ConfigError(f"mesh: data={data} x fsdp={cfg.fsdp} x model={cfg.model} does not match {n} devices")
    if batch_size % (data * cfg.fsdp):
        raise ConfigError(
            f"train.batch_size={batch_size} is not divisible by mesh.data x mesh.fsdp = {data * cfg.fsdp}"
        )
    auto = (jax.sharding.AxisType.Auto,) * 3  # let XLA propagate shardings between the declared ones
    return jax.make_mesh((data, cfg.fsdp, cfg.model), AXES, axis_types=auto, devices=jax.devices()[:total])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def leaf_spec(path: str, shape: tuple[int, ...], fsdp: int, model: int) -> P:
    """Partition spec of one parameter/optimizer leaf (see the module docstring for the rules).

    Args:
      path: "/"-joined tree path, e.g. ``"block_0/attn/qkv/kernel"``.
      shape: the leaf's shape.
      fsdp, model: the mesh's ``fsdp`` and ``model`` sizes.

    Returns:
      A ``PartitionSpec`` with at most one axis on ``model`` and one on ``fsdp`` (only axes the
      size divides); ``P()`` (replicated) for scalars and leaves nothing divides.
    """
    spec: list[str | None] = [None] * len(shape)
    if model > 1 and len(shape) >= 2:
        axis = None
        if COLUMN_PARALLEL.search(path):
            axis = len(shape) - 2 if len(shape) >= 3 else len(shape) - 1  # heads of [d, (3,) H, hd]; units of [d, h]
        elif ROW_PARALLEL.search(path):
            axis = 0  # heads of [H, hd, d]; units of [h, d]
        if axis is not None and shape[axis] % model == 0:
            spec[axis] = "model"
    if fsdp > 1:
        free = [a for a in range(len(shape)) if spec[a] is None and shape[a] % fsdp == 0]
        if free:
            spec[max(free, key=lambda a: (shape[a], -a))] = "fsdp"
    while spec and spec[-1] is None:  # canonical form: P() for replicated, no trailing Nones
        spec.pop()
    return P(*spec)


def state_shardings(tree, mesh: Mesh):
    """``NamedSharding`` for every array leaf of a (train-state or abstract) tree, by :func:`leaf_spec`;
    the leaves of a train state's ``"carry"`` (batch-first carried state) are split over the batch axes
    like a batch."""
    fsdp, model = mesh.shape["fsdp"], mesh.shape["model"]

    def one(path, leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        if path and jax.tree_util.keystr(path[:1], simple=True) == "carry":
            return batch_sharding(mesh)
        name = jax.tree_util.keystr(path, simple=True, separator="/")
        return NamedSharding(mesh, leaf_spec(name, shape, fsdp, model))

    return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: Mesh, leading_dims: int = 0) -> NamedSharding:
    """Shard axis ``leading_dims`` (the batch axis) over ``data × fsdp``; earlier axes (micro-steps) stay whole."""
    return NamedSharding(mesh, P(*([None] * leading_dims), BATCH_AXES))


def batch_shardings(batch: dict[str, np.ndarray], mesh: Mesh, leading_dims: int = 0) -> dict[str, NamedSharding]:
    """The sharding of each batch entry: split over the batch axis, or replicated for per-step values."""
    split = batch_sharding(mesh, leading_dims)
    return {k: split if np.ndim(v) > leading_dims else replicated(mesh) for k, v in batch.items()}


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh, leading_dims: int = 0) -> dict[str, jax.Array]:
    """Place a host batch onto the mesh, split over ``data × fsdp``.

    Multi-process: every process holds the same global batch (a function of seed and step) and
    fills its own devices' shards from it.
    """
    out = {}
    for (k, v), sharding in zip(batch.items(), batch_shardings(batch, mesh, leading_dims).values()):
        v = np.asarray(v)
        if jax.process_count() == 1:
            out[k] = jax.device_put(v, sharding)
        else:
            out[k] = jax.make_array_from_callback(v.shape, sharding, lambda index, v=v: v[index])
    return out
