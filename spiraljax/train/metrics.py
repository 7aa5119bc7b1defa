"""Metrics as JSON lines (+ optional TensorBoard), truncated on resume so history stays exact."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from spiraljax.runs import read_metrics  # resume truncates the rows past the checkpoint


def to_jsonable(v: Any) -> Any:
    v = np.asarray(v)
    if v.ndim == 0:
        x = v.item()
        return None if isinstance(x, float) and not math.isfinite(x) else x
    return v.tolist()


class MetricsWriter:
    def __init__(self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = False):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None:  # drop rows written after the checkpoint we resume from
            keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
            tmp.replace(self.path)
        elif self.path.exists():
            self.path.unlink()
        self.file = self.path.open("a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter  # optional dependency

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                print("note: train.tensorboard=true but tensorboardX is not installed; writing JSONL only")

    def write(self, step: int, kind: str, values: dict[str, Any]) -> None:
        row = {"step": int(step), "kind": kind, **{k: to_jsonable(v) for k, v in values.items()}}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


class NullWriter:
    """The metrics writer of a non-primary process in a multi-process run: writes nothing."""

    def write(self, step: int, kind: str, values: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
