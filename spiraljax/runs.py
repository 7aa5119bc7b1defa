"""Reading a run directory: the read API of evaluation, the report and notebooks.

A run is ``RUN/config.yaml``, ``RUN/metrics.jsonl`` (one JSON object per line) and
``RUN/checkpoints/<step>/`` (Orbax). :func:`read_metrics` reads the metric lines; :func:`load_run` the
config and the parameters of one step. Neither changes anything in the run. Training writes runs
(``spiraljax.train``) and reads them back through this module, so ``spiraljax.eval`` never imports
the trainer.

The Orbax reading helpers (managers, candidates in order, the one restore routine) still live in
``spiraljax.train.checkpoint`` beside the writer and are imported inside :func:`load_run`; they move
here once the branch that reworks them has landed (tests/test_layering.py lists that one edge).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from spiraljax import config as config_lib, old_layout
from spiraljax.errors import CheckpointError


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a ``metrics.jsonl`` in order ([] when there is none); a torn last line is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line after a kill
    return rows


def load_run(run_dir: str | Path, checkpoint: str | int = "best", return_step: bool = False):
    """Load a trained run's config and parameters (nothing in the run is changed).

    Args:
      run_dir: a run directory (``config.yaml`` + ``checkpoints/``).
      checkpoint: ``"best"`` (lowest validation loss; falls back to the newest step when no
        validation has happened yet), ``"latest"``, or a step number.
      return_step: also return the step that was loaded.

    Returns:
      ``(cfg, {"params": …})`` or ``(cfg, variables, step)``; parameters are placed on this process's
      first device whatever topology saved them. An unreadable step falls back to the next candidate
      with a one-line warning; :class:`CheckpointError` when none is readable.
    """
    import orbax.checkpoint as ocp

    from spiraljax.train.checkpoint import (
        Candidate,
        _local_target,
        _problem,
        best_first,
        first_readable,
        newest_first,
        run_managers,
        tree_signature,
    )

    run = Path(run_dir)
    cfg_file = run / "config.yaml"
    if not cfg_file.is_file():
        raise CheckpointError(f"{run}: not a run directory (no config.yaml)")
    cfg = config_lib.load(cfg_file)
    managers = run_managers(run / "checkpoints")
    if isinstance(checkpoint, int) or str(checkpoint).isdigit():
        want = int(checkpoint)
        candidates = [c for c in newest_first(managers) if c.step == want]
        if not candidates:
            raise CheckpointError(f"{run}: no checkpoint at step {want}")
    elif checkpoint in ("best", "latest"):
        candidates = best_first(managers) if checkpoint == "best" else newest_first(managers)
    else:
        raise CheckpointError(f"--checkpoint must be best, latest or a step number, got {checkpoint!r}")
    if not candidates:
        raise CheckpointError(f"{run}: no checkpoints saved yet")

    def read(c: Candidate):
        target = _local_target(c.mngr.item_metadata(c.step)["params"])
        params = c.mngr.restore(c.step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target))).params
        if old_layout.has_old_names(tree_signature(params, "params")):  # saved by 0.1.0
            params = old_layout.unflatten_attention(old_layout.rename_from_old(params), cfg.model.n_heads)
        return params

    def warn(c: Candidate, err: BaseException) -> None:
        print(
            f"warning: checkpoint {c.path} is unreadable ({_problem(err)}); falling back to an earlier one",
            file=sys.stderr,
        )

    found = first_readable(candidates, read, warn)
    if found is None:
        raise CheckpointError(f"{run}: every checkpoint is unreadable")
    variables = {"params": found[1]}
    return (cfg, variables, found[0].step) if return_step else (cfg, variables)
