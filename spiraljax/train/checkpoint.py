"""Orbax checkpoints: the latest K rolling checkpoints plus the best-by-validation one.

Layout: ``RUN/checkpoints/latest/<step>/`` (kept: ``checkpoint.keep``) and
``RUN/checkpoints/best/<step>/`` (only ever replaced by a better one, never by rotation).
Each checkpoint holds ``params``, ``opt_state`` (Orbax StandardSave) and ``meta`` (JSON: step,
rng, skipped, val_loss). Orbax commits atomically, so a crash mid-save leaves earlier steps intact;
a checkpoint that fails to restore is reported in one line and the previous one is used.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from spiraljax import config as config_lib

ITEMS = ("params", "opt_state", "meta")


class CheckpointError(RuntimeError):
    """No usable checkpoint (one-line message)."""


def _manager(path: Path, keep: int, async_save: bool) -> ocp.CheckpointManager:
    opts = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
    return ocp.CheckpointManager(path.resolve(), options=opts, item_names=ITEMS)


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


def _save_args(state: dict, meta: dict) -> ocp.args.Composite:
    return ocp.args.Composite(params=ocp.args.StandardSave(state["params"]),
                              opt_state=ocp.args.StandardSave(state["opt_state"]),
                              meta=ocp.args.JsonSave(meta))


def state_meta(state: dict, **extra: Any) -> dict:
    return {"step": int(state["step"]), "skipped": int(state["skipped"]),
            "rng": np.asarray(jax.device_get(state["rng"])).tolist(), **extra}


class Checkpointer:
    def __init__(self, run_dir: str | Path, keep: int = 3, async_save: bool = True):
        root = Path(run_dir) / "checkpoints"
        self.latest = _manager(root / "latest", keep, async_save)
        self.best = _manager(root / "best", 1, async_save)

    def save(self, state: dict, **meta: Any) -> None:
        step = int(state["step"])
        if step not in self.latest.all_steps():
            self.latest.save(step, args=_save_args(state, state_meta(state, **meta)), force=True)

    def save_best(self, state: dict, val_loss: float) -> None:
        step = int(state["step"])
        if step not in self.best.all_steps():
            self.best.save(step, args=_save_args(state, state_meta(state, val_loss=val_loss)), force=True)

    def best_val_loss(self) -> float:
        meta = restore_meta(self.best)
        return float(meta.get("val_loss", float("inf"))) if meta else float("inf")

    def has_checkpoints(self) -> bool:
        return bool(self.latest.all_steps() or self.best.all_steps())

    def restore(self, template: dict) -> dict:
        """Restore the newest restorable state (latest or best, whichever is newer), falling back on corruption."""
        candidates = sorted([(s, self.latest) for s in self.latest.all_steps()] +
                            [(s, self.best) for s in self.best.all_steps()], key=lambda c: -c[0])
        for step, mngr in candidates:
            try:
                r = mngr.restore(step, args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(_abstract(template["params"])),
                    opt_state=ocp.args.StandardRestore(_abstract(template["opt_state"])),
                    meta=ocp.args.JsonRestore()))
            except Exception as err:  # corrupt or partial checkpoint: fall back to the previous one
                _warn_corrupt(mngr, step, err)
                continue
            meta = r.meta
            rng = np.asarray(meta["rng"], dtype=np.asarray(template["rng"]).dtype)
            return {"params": r.params, "opt_state": r.opt_state,
                    "step": jax.numpy.asarray(meta["step"], jax.numpy.int32),
                    "rng": jax.numpy.asarray(rng), "skipped": jax.numpy.asarray(meta["skipped"], jax.numpy.int32)}
        raise CheckpointError("no restorable checkpoint found")

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.latest.close()
        self.best.close()


def _warn_corrupt(mngr: ocp.CheckpointManager, step: int, err: Exception) -> None:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    print(f"warning: checkpoint {mngr.directory}/{step} is unreadable ({type(err).__name__}: {first}); "
          "falling back to an earlier one", file=sys.stderr)


def restore_meta(mngr: ocp.CheckpointManager, step: int | None = None) -> dict | None:
    step = mngr.latest_step() if step is None else step
    if step is None:
        return None
    try:
        return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception:
        return None


def _local_target(metadata):
    """Shapes/dtypes of a saved tree placed on this process's first device (any saving topology)."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)


def load_run(run_dir: str | Path, checkpoint: str | int = "best", return_step: bool = False):
    """Load ``(cfg, variables)`` from a run directory: ``checkpoint`` is 'best', 'latest' or a step.

    'best' falls back to 'latest' when no evaluation has happened yet; an unreadable checkpoint
    falls back to the previous one with a warning.
    """
    run = Path(run_dir)
    cfg_file = run / "config.yaml"
    if not cfg_file.is_file():
        raise CheckpointError(f"{run}: not a run directory (no config.yaml)")
    cfg = config_lib.load(cfg_file)
    root = run / "checkpoints"
    managers = {}
    for name in ("latest", "best"):
        if (root / name).is_dir():
            managers[name] = ocp.CheckpointManager((root / name).resolve(), item_names=ITEMS,
                                                   options=ocp.CheckpointManagerOptions(read_only=True),
                                                   item_handlers={"params": ocp.StandardCheckpointHandler()})
    candidates: list[tuple[int, ocp.CheckpointManager]] = []
    if isinstance(checkpoint, int) or str(checkpoint).isdigit():
        want = int(checkpoint)
        candidates = [(want, m) for m in managers.values() if want in m.all_steps()]
        if not candidates:
            raise CheckpointError(f"{run}: no checkpoint at step {want}")
    else:
        if checkpoint not in ("best", "latest"):
            raise CheckpointError(f"--checkpoint must be best, latest or a step number, got {checkpoint!r}")
        order = ["best", "latest"] if checkpoint == "best" else ["latest", "best"]
        for name in order:
            if name in managers:
                candidates += [(s, managers[name]) for s in sorted(managers[name].all_steps(), reverse=True)]
    if not candidates:
        raise CheckpointError(f"{run}: no checkpoints saved yet")
    for step, mngr in candidates:
        try:
            target = _local_target(mngr.item_metadata(step)["params"])
            r = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
        except Exception as err:
            _warn_corrupt(mngr, step, err)
            continue
        variables = {"params": r.params}
        return (cfg, variables, step) if return_step else (cfg, variables)
    raise CheckpointError(f"{run}: every checkpoint is unreadable")
