"""Induction (repeated-segment copy) task: random tokens with one segment repeated at a random offset.

Sequence of ``T + 1`` ids drawn uniformly from ``[0, n_symbols)``; a segment ``s`` of length
``L ∈ [min_len, max_len]`` starts at ``a`` and appears again at ``b ≥ a + L`` (both uniform, so the
distance ``b − a`` varies and no fixed positional shift solves it). The loss mask is 1 exactly on
the targets ``s[1:]`` of the second occurrence: tokens that are predictable only by finding the
previous occurrence of the current token and copying its successor (an induction head).
Deterministic per (seed, index). ``data.source: induction``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from spiraljax.config import Config, DataConfig
from spiraljax.data.base import Batch, SyntheticTask, step_rng


class InductionDataConfig(DataConfig):
    source: Literal["induction"] = "induction"
    n_symbols: int = Field(256, gt=1, le=256, description="distinct random tokens (≤ model.vocab_size)")
    min_len: int = Field(8, gt=1, description="shortest repeated segment")
    max_len: int = Field(19, gt=1, description="longest repeated segment")
    seed: int = Field(0, description="seed of the generated sequences (with train.seed)")

    def build(self, cfg: Config) -> "InductionData":
        return InductionData(cfg)

    @model_validator(mode="after")
    def _lengths(self) -> "InductionDataConfig":
        if self.min_len > self.max_len:
            raise ValueError(f"need min_len ≤ max_len (got {self.min_len} > {self.max_len})")
        return self


def induction_example(rng: np.random.Generator, length: int, seg_len: int, n_symbols: int):
    """One sequence of ``length + 1`` ids and the mask over its ``length`` targets.

    Input position ``p`` predicts ``seq[p + 1]``; the mask covers ``p ∈ [b, b + L − 1)``, whose targets
    are the second occurrence's tokens after its first one.
    """
    seq = rng.integers(0, n_symbols, size=length + 1).astype(np.int32)
    a = int(rng.integers(0, length + 2 - 2 * seg_len))
    b = int(rng.integers(a + seg_len, length + 2 - seg_len))
    seq[b : b + seg_len] = seq[a : a + seg_len]
    mask = np.zeros(length, np.float32)
    mask[b : b + seg_len - 1] = 1.0
    return seq, mask


def induction_batch(
    seed: int, index: int, batch: int, length: int, min_len: int, max_len: int, n_symbols: int
) -> Batch:
    """A batch of induction sequences; segment lengths are capped so two copies fit in ``length + 1``."""
    rng = step_rng(seed, index, stream=11)
    cap = max(2, (length + 1) // 2)
    lo, hi = min(min_len, cap), min(max_len, cap)
    seqs, masks = zip(*(induction_example(rng, length, int(rng.integers(lo, hi + 1)), n_symbols) for _ in range(batch)))
    seqs = np.stack(seqs)
    return {"inputs": seqs[:, :-1], "targets": seqs[:, 1:], "mask": np.stack(masks)}


class InductionData(SyntheticTask):
    d: InductionDataConfig

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.vocab_size = cfg.model.vocab_size
        if self.d.n_symbols > self.vocab_size:
            from spiraljax.config import ConfigError

            raise ConfigError(f"data.n_symbols={self.d.n_symbols} exceeds model.vocab_size={self.vocab_size}")
        self.token_bytes = np.ones(self.vocab_size, np.float32)

    def batch(self, index: int, batch: int, length: int | None = None, stream_offset: int = 0) -> Batch:
        d = self.d
        return induction_batch(
            self.seed + stream_offset, index, batch, length or self.seq_len, d.min_len, d.max_len, d.n_symbols
        )
