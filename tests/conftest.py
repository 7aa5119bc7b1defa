"""Shared fixtures: tiny configs so every compile is cheap.

Precision: every test runs with float32 matrix products at full precision
(``jax_default_matmul_precision = "highest"``, also for the CLI subprocesses through
``JAX_DEFAULT_MATMUL_PRECISION``). The tolerances compare fast paths with their references and
models with float64/numpy results; they are set for float32 arithmetic. On a CPU this changes
nothing (its float32 products are exact either way, bit for bit); on an NVIDIA GPU the default would
be TF32 products (10-bit mantissa, ~1e-3 relative), which no 1e-5 tolerance survives. A test of
reduced-precision behaviour says so itself (``model.dtype=bfloat16``), it does not rely on this default.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest

MATMUL_PRECISION = "highest"
jax.config.update("jax_default_matmul_precision", MATMUL_PRECISION)

ROOT = Path(__file__).resolve().parent.parent  # the project root (configs/, data/, train.py)

TINY = [
    "name=tiny",
    "model.d_model=32",
    "model.n_layers=1",
    "model.n_heads=2",
    "model.seq_len=16",
    "train.batch_size=4",
    "train.steps=20",
    "train.lr=1e-2",
    "train.warmup_steps=2",
    "train.eval_every=10",
    "train.log_every=5",
    "train.progress=false",
    "checkpoint.every=5",
    "eval.batches=2",
    "eval.batch_size=4",
    "eval.sample_tokens=8",
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture
def tiny_cfg(tmp_path):
    from spiraljax import config

    return config.load(None, TINY + [f"data.cache_dir={tmp_path / 'cache'}"])


def subprocess_env(devices: int | None = None) -> dict[str, str]:
    """Environment for CLI subprocesses (spiraljax is imported from the installed package)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_DEFAULT_MATMUL_PRECISION=MATMUL_PRECISION)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def assert_future_independent(logits_fn, tokens, positions, vocab: int, shift: int = 7, atol: float = 1e-5) -> None:
    """Changing tokens after t leaves logits ≤ t unchanged — and does change the logits after t
    (so the check can fail)."""
    import numpy as np

    base = logits_fn(tokens)
    for t in positions:
        changed = tokens.at[:, t + 1 :].set((tokens[:, t + 1 :] + shift) % vocab)
        out = logits_fn(changed)
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=atol, err_msg=f"future leaks into {t}")
        assert not np.allclose(out[:, t + 1 :], base[:, t + 1 :], atol=atol), f"position {t + 1} ignores its input"
