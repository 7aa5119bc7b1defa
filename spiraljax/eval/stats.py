"""Mean ± sample standard deviation over seeds, and how it is printed (the report and the suites)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def mean_sd(values: Sequence[float | None]) -> tuple[float, float, int]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value) of the non-missing values."""
    xs = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if len(xs) == 0:
        return float("nan"), float("nan"), 0
    return float(xs.mean()), float(xs.std(ddof=1)) if len(xs) > 1 else 0.0, len(xs)


def plus_minus(mean: float, sd: float, digits: int = 3) -> str:
    """``"mean ± sd"`` with ``digits`` decimals."""
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"
