"""Orbax checkpoints: one ``CheckpointManager`` per run, keeping the newest K steps and the best one.

Layout: ``RUN/checkpoints/<step>/`` with items ``params``, ``opt_state`` (Orbax StandardSave),
``meta`` (JSON: step, rng, skipped, val_loss, train_seconds) and, for a ``train.carry_state`` run,
``carry`` (StandardSave: the carried model state, so a resume mid-document is exact). A step saved
right after a validation pass carries Orbax metrics ``{"val_loss": …}``; the manager's preservation
policy keeps the newest ``checkpoint.keep`` steps (``LatestN``) plus the step with the lowest
``val_loss`` (``BestN``), so "best" is never lost to rotation. Orbax commits atomically: a crash
mid-save leaves earlier steps intact. Plain Orbax reads every checkpoint
(``ocp.CheckpointManager(RUN/checkpoints, item_names=("params", "opt_state", "meta"))``, see docs/training.md).

One restore routine (:func:`first_readable`) serves ``--resume``, :func:`spiraljax.runs.load_run` and
``evaluate.py``: it walks candidate steps in order and returns the first that restores. When a run
resumes, an unreadable step is moved (never deleted) to ``RUN/checkpoints/corrupt/<step>`` with one
warning line and the previous step is used; reading a run never moves anything. Runs written before
this layout (``checkpoints/latest/<step>`` and ``checkpoints/best/<step>``) are still read and resumed.

Orbax's routine absl notices are filtered (:func:`quiet_orbax`). A failed read used to leave Orbax
tasks pending on a closed event loop (printed at exit as "coroutine … was never awaited", "Event loop
is closed" …); every read now runs inside :func:`~spiraljax.train.async_teardown.draining_event_loops`,
whose loops cancel and await their tasks before closing, so every problem is reported in exactly one
line and nothing follows it.
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from spiraljax import old_layout
from spiraljax.errors import CheckpointError
from spiraljax.train.async_teardown import draining_event_loops

ITEMS = ("params", "opt_state", "meta", "carry")  # carry: only in train.carry_state runs
# The layout before one manager, checkpoints/<kind>/<step>: no longer read since version 0.1.0 (refused in one
# line that says how to move the steps into the current layout; nothing is deleted).
LEGACY_KINDS = ("latest", "best")
CORRUPT = "corrupt"


# ----------------------------------------------------------------------------- quiet Orbax
_QUIET_INSTALLED = False


def _is_orbax_notice(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR and "orbax" in record.pathname.replace("\\", "/").split("/")


def _drop_orbax_notices(record: logging.LogRecord) -> bool:
    return not _is_orbax_notice(record)


def quiet_orbax() -> None:
    """Silence Orbax's below-ERROR absl records (routine notices), so each problem is reported once,
    by us. Nothing else is filtered: the asyncio leftovers a failed restore used to leave behind are
    prevented at their cause (:func:`first_readable` reads inside
    :func:`~spiraljax.train.async_teardown.draining_event_loops`). Idempotent."""
    global _QUIET_INSTALLED
    if _QUIET_INSTALLED:
        return
    _QUIET_INSTALLED = True
    logging.getLogger("absl").addFilter(_drop_orbax_notices)


# ----------------------------------------------------------------------------- the manager
def _handlers() -> dict[str, ocp.CheckpointHandler]:
    return {
        "params": ocp.StandardCheckpointHandler(),
        "opt_state": ocp.StandardCheckpointHandler(),
        "meta": ocp.JsonCheckpointHandler(),
        "carry": ocp.StandardCheckpointHandler(),
    }


def _val_loss(metrics: Any) -> float:
    return float(metrics["val_loss"])


def make_manager(path: Path, keep: int = 3, async_save: bool = True, read_only: bool = False) -> ocp.CheckpointManager:
    """The run's manager: keeps the newest ``keep`` steps and the lowest-``val_loss`` step."""
    if read_only:
        opts = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False)
    else:
        policy = ocp.checkpoint_managers.AnyPreservationPolicy(
            [
                ocp.checkpoint_managers.LatestN(n=keep),
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=_val_loss, reverse=True, n=1, keep_checkpoints_without_metrics=False
                ),
            ]
        )
        opts = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            best_fn=_val_loss,
            best_mode="min",
            enable_async_checkpointing=async_save,
            create=True,
        )
    return ocp.CheckpointManager(path.resolve(), options=opts, item_names=ITEMS, item_handlers=_handlers())


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


def _save_args(state: dict, meta: dict) -> ocp.args.Composite:
    carry = {"carry": ocp.args.StandardSave(state["carry"])} if "carry" in state else {}
    return ocp.args.Composite(
        params=ocp.args.StandardSave(state["params"]),
        opt_state=ocp.args.StandardSave(state["opt_state"]),
        meta=ocp.args.JsonSave(meta),
        **carry,
    )


def state_meta(state: dict, **extra: Any) -> dict:
    return {
        "step": int(state["step"]),
        "skipped": int(state["skipped"]),
        "rng": np.asarray(jax.device_get(state["rng"])).tolist(),
        **extra,
    }


def _problem(err: BaseException) -> str:
    first = (str(err).strip().splitlines() or [""])[0][:160]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


# ----------------------------------------------------------------------------- tree signatures
def tree_signature(tree, prefix: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{"params/block_0/attn/qkv/kernel": (shape, dtype)}`` for every array leaf of a state tree,
    a saved checkpoint's metadata tree or an ``eval_shape`` tree alike."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        f"{prefix}/{jax.tree_util.keystr(path, simple=True, separator='/')}": (
            tuple(leaf.shape),
            str(np.dtype(leaf.dtype)),
        )
        for path, leaf in leaves
        if hasattr(leaf, "shape")
    }


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
    return _signature(mngr.item_metadata(step))


def _signature(state: Any) -> dict:
    """Shapes/dtypes of the ``params`` and ``opt_state`` of a state tree or a step's metadata."""
    return {**tree_signature(state["params"], "params"), **tree_signature(state["opt_state"], "opt_state")}


def _reshaped_abstract(leaf, shape: tuple[int, ...]) -> jax.ShapeDtypeStruct:
    """An abstract leaf of another shape, replicated on the leaf's mesh (its spec has the old rank)."""
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, jax.sharding.NamedSharding):
        sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    return jax.ShapeDtypeStruct(shape, leaf.dtype, sharding=sharding)


def _saved_form(saved: dict, state: dict) -> dict | None:
    """The 0.1.0 form of ``state`` (:mod:`spiraljax.old_layout`) whose signature is ``saved``; None when
    ``saved`` is today's form or none of them."""
    if not old_layout.has_old_names(saved) or saved == _signature(state):
        return None
    for form in old_layout.old_forms({"params": state["params"], "opt_state": state["opt_state"]}, _reshaped_abstract):
        if _signature(form) == saved:
            return form
    return None


def _from_old(tree, template):
    """A tree restored in a 0.1.0 form, in today's names, shapes and shardings of ``template``."""

    def place(t, x):
        if tuple(x.shape) == tuple(t.shape):
            return x
        return jax.device_put(x.reshape(t.shape), getattr(t, "sharding", None))

    return jax.tree.map(place, template, old_layout.rename_from_old(tree))


# ----------------------------------------------------------------------------- candidates and the one restore routine
@dataclass(frozen=True)
class Candidate:
    """One saved step of the run's manager."""

    mngr: ocp.CheckpointManager
    step: int

    @property
    def path(self) -> Path:
        return Path(str(self.mngr.directory)) / str(self.step)


def run_managers(root: Path, mngr: ocp.CheckpointManager | None = None) -> dict[str, ocp.CheckpointManager]:
    """``{"": the run's manager}`` of ``RUN/checkpoints`` (empty when there is none); a run in the old
    two-directory layout (``checkpoints/latest/<step>``, ``checkpoints/best/<step>``) is refused with a
    one-line CheckpointError naming the directory and the move that converts it."""
    quiet_orbax()
    for kind in LEGACY_KINDS:
        if (root / kind).is_dir() and any(p.name.isdigit() for p in (root / kind).iterdir()):
            raise CheckpointError(
                f"{root / kind}: checkpoints in the layout before version 0.1.0 "
                f"(checkpoints/{kind}/<step>), no longer read; move each step up into {root}/ "
                f"(e.g. mv {root / kind}/* {root}/) and run again"
            )
    if mngr is not None:
        return {"": mngr}
    return {"": make_manager(root, read_only=True)} if root.is_dir() else {}


def val_loss_of(c: Candidate) -> float | None:
    """The validation loss recorded with a step (Orbax metrics), or None."""
    try:
        metrics = c.mngr.metrics(c.step)
        return _val_loss(metrics) if metrics else None
    except Exception:
        return None


def newest_first(managers: dict[str, ocp.CheckpointManager]) -> list[Candidate]:
    """Every saved step, newest first."""
    cands = [Candidate(m, s) for m in managers.values() for s in m.all_steps()]
    return sorted(cands, key=lambda c: -c.step)


def best_first(managers: dict[str, ocp.CheckpointManager]) -> list[Candidate]:
    """Steps with a validation loss, lowest first; then the others, newest first."""
    scored = [(val_loss_of(c), c) for c in newest_first(managers)]
    with_loss = sorted(((v, c) for v, c in scored if v is not None), key=lambda vc: (vc[0], -vc[1].step))
    return [c for _, c in with_loss] + [c for v, c in scored if v is None]


def first_readable(
    candidates: list[Candidate], read: Callable[[Candidate], Any], on_error: Callable[[Candidate, BaseException], None]
) -> tuple[Candidate, Any] | None:
    """The one restore routine: ``(candidate, read(candidate))`` of the first candidate that reads;
    ``on_error`` is told of every one that fails (warn, or move aside). None when none reads."""
    for c in candidates:
        try:
            with draining_event_loops():  # a failed read leaves no pending Orbax task behind
                return c, read(c)
        except Exception as err:
            on_error(c, err)
    return None


def _local_target(metadata):
    """Shapes/dtypes of a saved tree placed on this process's first device (any saving topology)."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)


# ----------------------------------------------------------------------------- the trainer's checkpointer
class Checkpointer:
    """Saves a training run's state; restores the newest readable step on resume."""

    def __init__(self, run_dir: str | Path, keep: int = 3, async_save: bool = True):
        quiet_orbax()
        self.root = Path(run_dir) / "checkpoints"
        self.mngr = make_manager(self.root, keep, async_save)
        self.managers = run_managers(self.root, self.mngr)
        self.restored_meta: dict = {}  # the meta item of the step restore() read

    def save(self, state: dict, val_loss: float | None = None, meta: dict | None = None) -> None:
        """Save ``state`` at its step (once per step); ``val_loss`` marks it as a candidate for best;
        ``meta``: more JSON values for the meta item (e.g. ``train_seconds``)."""
        step = int(state["step"])
        if step in self.mngr.all_steps():
            return
        extra = {} if val_loss is None else {"val_loss": float(val_loss)}
        self.mngr.save(
            step, args=_save_args(state, state_meta(state, **(meta or {}), **extra)), metrics=extra or None, force=True
        )

    def has_checkpoints(self) -> bool:
        return any(m.all_steps() for m in self.managers.values())

    def incompatibility(self, abstract_state: dict) -> str | None:
        """Compare the newest saved step whose metadata is readable with ``abstract_state`` (e.g.
        ``jax.eval_shape`` of ``init_state`` for a new config) without loading any array; returns the
        first differing parameter / optimizer leaf, or None when they match."""
        found = first_readable(
            newest_first(self.managers), lambda c: saved_signature(c.mngr, c.step), lambda c, err: None
        )  # unreadable metadata: restore() moves the step aside
        if found is None or _saved_form(found[1], abstract_state) is not None:
            return None
        return first_mismatch(found[1], _signature(abstract_state))

    def move_aside(self, c: Candidate, err: BaseException) -> Path:
        """Move an unreadable step to ``checkpoints/corrupt/<step>`` (never delete), warn once."""
        base = self.root / CORRUPT
        dst, n = base / str(c.step), 1
        while dst.exists():
            dst, n = base / f"{c.step}.{n}", n + 1
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.move(str(c.path), str(dst))
        except FileNotFoundError:  # another process of a multi-host run moved it first
            pass
        c.mngr.reload()
        if jax.process_index() == 0:  # every process of a multi-process run meets it: one line
            print(f"warning: checkpoint {c.path} is unreadable ({_problem(err)}); moved it to {dst}", file=sys.stderr)
        return dst

    def restore(self, template: dict) -> dict:
        """The newest step that restores in full (params, optimizer state, meta, and the carry when
        ``template`` has one); every unreadable step met on the way is moved aside, so the steps
        retrained after the fallback are saved. The step's meta is kept in ``self.restored_meta``."""
        carry = {"carry": ocp.args.StandardRestore(_abstract(template["carry"]))} if "carry" in template else {}

        def read(c: Candidate):
            saved = _saved_form(saved_signature(c.mngr, c.step), template) or template
            r = c.mngr.restore(
                c.step,
                args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(_abstract(saved["params"])),
                    opt_state=ocp.args.StandardRestore(_abstract(saved["opt_state"])),
                    meta=ocp.args.JsonRestore(),
                    **carry,
                ),
            )
            if saved is template:
                return r
            return SimpleNamespace(
                meta=r.meta,
                carry=r.carry if carry else None,
                params=_from_old(r.params, template["params"]),
                opt_state=_from_old(r.opt_state, template["opt_state"]),
            )

        found = first_readable(newest_first(self.managers), read, self.move_aside)
        if found is None:
            raise CheckpointError(f"{self.root}: every checkpoint is unreadable (moved to {self.root / CORRUPT})")
        r = found[1]
        self.restored_meta = dict(r.meta)
        rng = np.asarray(r.meta["rng"], dtype=np.asarray(template["rng"]).dtype)
        state = {
            "params": r.params,
            "opt_state": r.opt_state,
            "step": jax.numpy.asarray(r.meta["step"], jax.numpy.int32),
            "rng": jax.numpy.asarray(rng),
            "skipped": jax.numpy.asarray(r.meta["skipped"], jax.numpy.int32),
        }
        if carry:
            state["carry"] = r.carry
        return state

    def wait(self) -> None:
        self.mngr.wait_until_finished()

    def close(self) -> None:
        self.wait()
        for m in self.managers.values():
            m.close()
