"""Orbax checkpoints: the latest K rolling checkpoints plus the best-by-validation one.

Layout: ``RUN/checkpoints/latest/<step>/`` (kept: ``checkpoint.keep``) and
``RUN/checkpoints/best/<step>/`` (only ever replaced by a better one, never by rotation).
Each checkpoint holds ``params``, ``opt_state`` (Orbax StandardSave) and ``meta`` (JSON: step,
rng, skipped, val_loss). Orbax commits atomically, so a crash mid-save leaves earlier steps intact.

A step that fails to restore when a run resumes is moved (never deleted) to
``RUN/checkpoints/corrupt/<latest|best>/<step>`` with one warning line, and the previous step is
used; the retrained step is then saved again under its own number. Reading a run
(:func:`load_run`) never moves anything: it warns in one line and falls back.

Orbax's routine absl notices and the asyncio tracebacks its reader threads leave behind after a
failed restore ("Event loop is closed") are filtered (:func:`quiet_orbax`), so every problem is
reported in exactly one line.
"""
from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from spiraljax import config as config_lib
from spiraljax.errors import CheckpointError

ITEMS = ("params", "opt_state", "meta")
KINDS = ("latest", "best")


# ----------------------------------------------------------------------------- quiet Orbax
_QUIET_INSTALLED = False


def _is_orbax_notice(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR and "orbax" in record.pathname.replace("\\", "/").split("/")


def _drop_orbax_notices(record: logging.LogRecord) -> bool:
    return not _is_orbax_notice(record)


def _is_orbax_task_leftover(record: logging.LogRecord) -> bool:
    """asyncio's "Task exception was never retrieved" for an Orbax read task that a failed restore
    abandoned (logged when the task is garbage-collected, so it appears or not depending on timing)."""
    text = record.getMessage()
    return "Task exception was never retrieved" in text and "/orbax/" in text.replace("\\", "/")


def _drop_orbax_tasks(record: logging.LogRecord) -> bool:
    return not _is_orbax_task_leftover(record)


def _is_orbax_leftover(unraisable) -> bool:
    """An unraisable exception left behind by a failed Orbax restore: tensorstore callbacks hitting
    the closed event loop, or Orbax read coroutines garbage-collected with their read error."""
    exc, obj = unraisable.exc_value, unraisable.object
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return True
    code = getattr(obj, "cr_code", None)
    return code is not None and "orbax" in code.co_filename.replace("\\", "/").split("/")


def quiet_orbax() -> None:
    """Silence Orbax's below-ERROR absl records and the unraisable tracebacks and abandoned-task
    errors a failed restore leaves behind (:func:`_is_orbax_leftover`, :func:`_is_orbax_task_leftover`), so each problem is reported once, by us. Everything
    else is passed on unchanged. Idempotent."""
    global _QUIET_INSTALLED
    if _QUIET_INSTALLED:
        return
    _QUIET_INSTALLED = True
    logging.getLogger("absl").addFilter(_drop_orbax_notices)
    logging.getLogger("asyncio").addFilter(_drop_orbax_tasks)
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if not _is_orbax_leftover(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook


# ----------------------------------------------------------------------------- managers
def _handlers() -> dict[str, ocp.CheckpointHandler]:
    return {"params": ocp.StandardCheckpointHandler(), "opt_state": ocp.StandardCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler()}


def _manager(path: Path, keep: int | None = None, async_save: bool = True,
             read_only: bool = False) -> ocp.CheckpointManager:
    if read_only:
        opts = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False)
    else:
        opts = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
    return ocp.CheckpointManager(path.resolve(), options=opts, item_names=ITEMS, item_handlers=_handlers())


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


def _save_args(state: dict, meta: dict) -> ocp.args.Composite:
    return ocp.args.Composite(params=ocp.args.StandardSave(state["params"]),
                              opt_state=ocp.args.StandardSave(state["opt_state"]),
                              meta=ocp.args.JsonSave(meta))


def state_meta(state: dict, **extra: Any) -> dict:
    return {"step": int(state["step"]), "skipped": int(state["skipped"]),
            "rng": np.asarray(jax.device_get(state["rng"])).tolist(), **extra}


def _problem(err: BaseException) -> str:
    first = (str(err).strip().splitlines() or [""])[0][:160]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


# ----------------------------------------------------------------------------- tree signatures
def _key_str(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def tree_signature(tree, prefix: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{"params/block_0/attn/qkv/kernel": (shape, dtype)}`` for every array leaf of a state tree,
    a saved checkpoint's metadata tree or an ``eval_shape`` tree alike."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join([prefix, *(_key_str(k) for k in path)]): (tuple(leaf.shape), str(np.dtype(leaf.dtype)))
            for path, leaf in leaves if hasattr(leaf, "shape")}


def first_mismatch(saved: dict, wanted: dict) -> str | None:
    """The first leaf (parameters before optimizer state, then by path) where two signatures differ."""
    for path in sorted(set(saved) | set(wanted), key=lambda p: (not p.startswith("params/"), p)):
        a, b = saved.get(path), wanted.get(path)
        if a == b:
            continue
        if a is None:
            return f"{path} is new (not in the checkpoint)"
        if b is None:
            return f"{path} is in the checkpoint but not in the new model"
        return f"{path}: checkpoint {a[0]} {a[1]}, new config {b[0]} {b[1]}"
    return None


def saved_signature(mngr: ocp.CheckpointManager, step: int) -> dict:
    """Shapes/dtypes of a saved step's params and optimizer state, read from metadata only."""
    md = mngr.item_metadata(step)
    return {**tree_signature(md["params"], "params"), **tree_signature(md["opt_state"], "opt_state")}


# ----------------------------------------------------------------------------- the trainer's checkpointer
class Checkpointer:
    def __init__(self, run_dir: str | Path, keep: int = 3, async_save: bool = True):
        quiet_orbax()
        self.root = Path(run_dir) / "checkpoints"
        self.latest = _manager(self.root / "latest", keep, async_save)
        self.best = _manager(self.root / "best", 1, async_save)
        self.managers = {"latest": self.latest, "best": self.best}

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

    def incompatibility(self, abstract_state: dict) -> str | None:
        """Compare the newest saved step whose metadata is readable with ``abstract_state`` (e.g.
        ``jax.eval_shape`` of ``init_state`` for a new config) without loading any array; returns the
        first differing parameter / optimizer leaf, or None when they match."""
        wanted = {**tree_signature(abstract_state["params"], "params"),
                  **tree_signature(abstract_state["opt_state"], "opt_state")}
        steps = sorted(((s, m) for m in self.managers.values() for s in m.all_steps()), key=lambda c: -c[0])
        for step, mngr in steps:
            try:
                saved = saved_signature(mngr, step)
            except Exception:  # unreadable metadata: restore() will move this step aside
                continue
            return first_mismatch(saved, wanted)
        return None

    def move_aside(self, kind: str, step: int, err: BaseException) -> Path:
        """Move an unreadable step to ``checkpoints/corrupt/<kind>/<step>`` (never delete) and warn once."""
        mngr = self.managers[kind]
        src = Path(str(mngr.directory)) / str(step)
        dst = self.root / "corrupt" / kind / str(step)
        n = 1
        while dst.exists():
            dst = self.root / "corrupt" / kind / f"{step}.{n}"
            n += 1
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.move(str(src), str(dst))
        except FileNotFoundError:  # another process of a multi-host run moved it first
            pass
        mngr.reload()
        print(f"warning: checkpoint {src} is unreadable ({_problem(err)}); moved it to {dst}", file=sys.stderr)
        return dst

    def _restore(self, mngr: ocp.CheckpointManager, step: int, template: dict, full: bool):
        items = dict(params=ocp.args.StandardRestore(_abstract(template["params"])), meta=ocp.args.JsonRestore())
        if full:
            items["opt_state"] = ocp.args.StandardRestore(_abstract(template["opt_state"]))
        return mngr.restore(step, args=ocp.args.Composite(**items))

    def _newest_readable(self, kind: str, template: dict, full: bool, above: int = -1):
        """(step, restored) of the newest step of ``kind`` that restores; unreadable ones are moved
        aside. With ``above``, steps ≤ ``above`` are only checked (params + meta), not returned."""
        mngr = self.managers[kind]
        for step in sorted(mngr.all_steps(), reverse=True):
            try:
                restored = self._restore(mngr, step, template, full=full and step > above)
            except Exception as err:
                self.move_aside(kind, step, err)
                continue
            return step, restored
        return None

    def restore(self, template: dict) -> dict:
        """Restore the newest restorable state (latest or best, whichever is newer).

        Every unreadable step met on the way — in ``latest`` and, by a params check, the newest
        ``best`` — is moved aside, so the steps retrained after the fallback are saved and found."""
        latest = self._newest_readable("latest", template, full=True)
        latest_step = latest[0] if latest else -1
        best = self._newest_readable("best", template, full=True, above=latest_step)
        if best is not None and best[0] > latest_step:
            step, r = best
        elif latest is not None:
            step, r = latest
        else:
            raise CheckpointError(f"{self.root}: every checkpoint is unreadable (moved to {self.root / 'corrupt'})")
        meta = r.meta
        rng = np.asarray(meta["rng"], dtype=np.asarray(template["rng"]).dtype)
        return {"params": r.params, "opt_state": r.opt_state,
                "step": jax.numpy.asarray(meta["step"], jax.numpy.int32),
                "rng": jax.numpy.asarray(rng), "skipped": jax.numpy.asarray(meta["skipped"], jax.numpy.int32)}

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.latest.close()
        self.best.close()


def _warn_unreadable(mngr: ocp.CheckpointManager, step: int, err: BaseException) -> None:
    print(f"warning: checkpoint {mngr.directory}/{step} is unreadable ({_problem(err)}); "
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


def read_managers(run_dir: str | Path) -> dict[str, ocp.CheckpointManager]:
    """Read-only managers of a run's ``latest`` and ``best`` checkpoints (those that exist)."""
    quiet_orbax()
    root = Path(run_dir) / "checkpoints"
    return {kind: _manager(root / kind, read_only=True) for kind in KINDS if (root / kind).is_dir()}


def load_run(run_dir: str | Path, checkpoint: str | int = "best", return_step: bool = False):
    """Load ``(cfg, variables)`` from a run directory: ``checkpoint`` is 'best', 'latest' or a step.

    'best' falls back to 'latest' when no evaluation has happened yet; an unreadable checkpoint
    falls back to the previous one with a one-line warning (nothing in the run is changed).
    """
    run = Path(run_dir)
    cfg_file = run / "config.yaml"
    if not cfg_file.is_file():
        raise CheckpointError(f"{run}: not a run directory (no config.yaml)")
    cfg = config_lib.load(cfg_file)
    managers = read_managers(run)
    candidates: list[tuple[int, ocp.CheckpointManager]] = []
    if isinstance(checkpoint, int) or str(checkpoint).isdigit():
        want = int(checkpoint)
        candidates = [(want, m) for m in managers.values() if want in m.all_steps()]
        if not candidates:
            raise CheckpointError(f"{run}: no checkpoint at step {want}")
    else:
        if checkpoint not in KINDS:
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
            _warn_unreadable(mngr, step, err)
            continue
        variables = {"params": r.params}
        return (cfg, variables, step) if return_step else (cfg, variables)
    raise CheckpointError(f"{run}: every checkpoint is unreadable")
