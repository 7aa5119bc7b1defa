"""The dataset contract every data source implements (a source's config class builds it: ``cfg.data.build(cfg)``).

A batch is a dict of numpy arrays: ``inputs`` [B, T] int32, ``targets`` [B, T] int32,
``mask`` [B, T] float32 (1 = count this target in the loss), plus optional extra
model keyword arguments (e.g. ``conditions`` [B, 5]) that the trainer forwards to
``model.apply``. A document-stream source (``longdocs``) adds :data:`STREAM_KEYS`: ``reset`` [B] bool
(the row starts a new document at this window) and ``doc_pos`` [B] int32 (offset of the window's
first input in its document), which the trainer consumes and never passes to the model.
``train_batch(step)`` is a pure function of ``(seed, step)`` so a resumed run sees exactly the batches it
would have seen.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np

from spiraljax.config import Config
from spiraljax.errors import DataError  # noqa: F401  (re-exported: the sources import it from here)

Batch = dict[str, np.ndarray]
BATCH_KEYS = ("inputs", "targets", "mask")
STREAM_KEYS = ("reset", "doc_pos")


class Dataset(Protocol):
    vocab_size: int
    token_bytes: np.ndarray  # [V] bytes (characters) each token stands for, for BPC
    unit: str  # what nats / (ln 2 · token_bytes) measures: "BPC" for text, "bits/glyph" for glyphs (optional)

    def train_batch(self, step: int) -> Batch: ...

    def val_batches(self) -> Iterator[Batch]: ...

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids) -> str: ...


def metric_unit(dataset) -> str:
    """The name of the validation 'bpc' number for this dataset (a dataset may set ``unit``)."""
    return getattr(dataset, "unit", "BPC")


def loss_unit(unit: str) -> str:
    """The unit of the validation loss beside a 'bpc' number in ``unit``: per glyph where the number is
    bits/glyph (a token is a glyph), per token otherwise (a byte with the byte tokenizer)."""
    return "nats/glyph" if unit == "bits/glyph" else "nats/token"


def build_dataset(cfg: Config) -> Dataset:
    """The dataset of ``cfg.data.source`` for the experiment ``cfg`` (``cfg.data.build(cfg)``)."""
    return cfg.data.build(cfg)


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """A numpy generator that depends only on (seed, step, stream)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(step), int(stream)])


def windows_at(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> Batch:
    """Slice ``[start, start + T + 1)`` windows into an LM batch (inputs, shifted targets)."""
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    chunk = np.asarray(tokens[idx], dtype=np.int32)
    return {"inputs": chunk[:, :-1], "targets": chunk[:, 1:], "mask": np.ones((len(starts), seq_len), np.float32)}


class SyntheticTask:
    """A generated task (MQAR, induction): the batch of (seed, index) is a pure function of both; validation
    batches come from a separate stream. Subclasses implement :meth:`batch`."""

    vocab_size = 256
    token_bytes = np.ones(256, np.float32)
    VAL_STREAM = 10_000_019

    def __init__(self, cfg: Config):
        self.d = cfg.data
        self.seq_len, self.batch_size = cfg.model.seq_len, cfg.train.batch_size
        self.seed = cfg.train.seed * 1000 + self.d.seed
        self.eval_batch_size, self.eval_batches = cfg.eval.batch_size, cfg.eval.batches

    def batch(self, index: int, batch: int, length: int | None = None, stream_offset: int = 0) -> Batch:
        raise NotImplementedError

    def train_batch(self, step: int) -> Batch:
        return self.batch(step, self.batch_size)

    def val_batches(self) -> Iterator[Batch]:
        for i in range(self.eval_batches):
            yield self.batch(i, self.eval_batch_size, stream_offset=self.VAL_STREAM)

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) % self.vocab_size

    def decode(self, ids) -> str:
        return " ".join(str(int(i)) for i in np.asarray(ids).ravel())
