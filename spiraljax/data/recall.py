"""Multi-query associative recall (MQAR): key–value pairs, then queries whose answers are the values.

Sequence (byte ids): ``k1 v1 k2 v2 … kn vn  q1 a1 q2 a2 …`` with keys from ``[KEY0, KEY0+n_keys)``,
values from ``[VAL0, VAL0+n_values)``; the loss mask is 1 only on answer targets. Deterministic per
(seed, index). ``data.source: mqar``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from spiraljax.config import Config, DataConfig
from spiraljax.data.base import Batch, SyntheticTask, step_rng

KEY0, VAL0 = 65, 129  # keys 'A'.., values after them; 0 is padding


class MQARDataConfig(DataConfig):
    source: Literal["mqar"] = "mqar"
    n_keys: int = Field(64, gt=1, le=64, description="distinct key tokens")
    n_values: int = Field(64, gt=1, le=64, description="distinct value tokens")
    min_pairs: int = Field(4, gt=0, description="fewest key-value pairs per sequence")
    max_pairs: int = Field(16, gt=0, description="most key-value pairs per sequence")
    seed: int = Field(0, description="seed of the generated sequences (with train.seed)")

    def build(self, cfg: Config) -> "MQARData":
        return MQARData(cfg)

    @model_validator(mode="after")
    def _pairs(self) -> "MQARDataConfig":
        if self.min_pairs > self.max_pairs or self.max_pairs > self.n_keys:
            raise ValueError("need min_pairs ≤ max_pairs ≤ n_keys")
        return self


def mqar_example(rng: np.random.Generator, length: int, n_pairs: int, n_keys: int, n_values: int):
    """One sequence of ``length + 1`` ids and the mask over its ``length`` targets."""
    keys = rng.choice(n_keys, size=n_pairs, replace=False) + KEY0
    vals = rng.integers(0, n_values, size=n_pairs) + VAL0
    seq = np.zeros(length + 1, np.int32)
    seq[: 2 * n_pairs : 2], seq[1 : 2 * n_pairs : 2] = keys, vals
    mask = np.zeros(length, np.float32)
    pos = 2 * n_pairs
    while pos + 1 <= length:
        i = int(rng.integers(n_pairs))
        seq[pos], seq[pos + 1] = keys[i], vals[i]
        mask[pos] = 1.0  # target at input position pos is seq[pos + 1], the answer
        pos += 2
    return seq, mask


def mqar_batch(
    seed: int, index: int, batch: int, length: int, min_pairs: int, max_pairs: int, n_keys: int, n_values: int
) -> Batch:
    rng = step_rng(seed, index, stream=7)
    cap = max(1, (length - 2) // 4)  # leave at least as much room for queries as for the pairs
    seqs, masks = zip(
        *(
            mqar_example(rng, length, min(int(rng.integers(min_pairs, max_pairs + 1)), cap), n_keys, n_values)
            for _ in range(batch)
        )
    )
    seqs = np.stack(seqs)
    return {"inputs": seqs[:, :-1], "targets": seqs[:, 1:], "mask": np.stack(masks)}


class MQARData(SyntheticTask):
    d: MQARDataConfig

    def batch(self, index: int, batch: int, length: int | None = None, stream_offset: int = 0) -> Batch:
        d = self.d
        return mqar_batch(
            self.seed + stream_offset,
            index,
            batch,
            length or self.seq_len,
            d.min_pairs,
            d.max_pairs,
            d.n_keys,
            d.n_values,
        )
