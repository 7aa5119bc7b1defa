"""Text corpora: tokenise once into a numpy memmap cache, split train/val, batch by step."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
from pydantic import Field

from spiraljax.config import Config, DataConfig, resolve_path
from spiraljax.data.base import Batch, DataError, step_rng, windows_at
from spiraljax.data.tokenizers import build_tokenizer


class TextDataConfig(DataConfig):
    source: Literal["text"] = "text"
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of the data held out for validation")
    path: str = Field(
        "data/tinyshakespeare.txt", description="UTF-8 corpus (relative: to the cwd, then the project root)"
    )
    tokenizer: Literal["byte", "bpe"] = Field("byte", description="bytes, or the BPE merges in bpe")
    bpe: str = Field("data/tinyshakespeare_bpe.tiktoken", description="BPE merges file (tokenizer: bpe)")
    cache_dir: str = Field(".cache/tokens", description="where the tokenized corpus is cached")
    val_batches: int | None = Field(None, gt=0, description="validation batches (null: eval.batches)")

    def build(self, cfg: Config) -> "TokenStream":
        tok = build_tokenizer(self.tokenizer, self.bpe)
        if tok.vocab_size > cfg.model.vocab_size:
            raise DataError(
                f"model.vocab_size={cfg.model.vocab_size} is smaller than the {self.tokenizer} "
                f"tokenizer's vocabulary ({tok.vocab_size})"
            )
        tokens = cached_tokens(self.path, tok, self.cache_dir)
        return TokenStream(
            tokens,
            tok,
            cfg.model.seq_len,
            cfg.train.batch_size,
            cfg.train.seed,
            self.val_fraction,
            cfg.eval.batch_size,
            self.val_batches or cfg.eval.batches,
            self.path,
        )


def read_corpus(path: str | Path) -> str:
    """Read a UTF-8 corpus; missing, empty or undecodable files raise a one-line DataError."""
    p = resolve_path(path)
    if not p.is_file():
        raise DataError(f"{path}: corpus file not found")
    raw = p.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: corpus is empty")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 at byte {err.start}") from None


def cached_tokens(path: str | Path, tokenizer, cache_dir: str | Path) -> np.memmap:
    """Token ids of the corpus as a read-only memmap, keyed by corpus hash + tokenizer name."""
    p = resolve_path(path)
    text = read_corpus(p)
    digest = hashlib.sha256(text.encode("utf-8") + tokenizer.name.encode()).hexdigest()[:16]
    cache = resolve_path(cache_dir) if Path(cache_dir).is_absolute() else Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    file = cache / f"{p.stem}-{tokenizer.name.replace(':', '_')}-{digest}.u32"
    if not file.exists():
        ids = tokenizer.encode(text).astype(np.uint32)
        tmp = file.with_suffix(f".{os.getpid()}.tmp")  # per process: concurrent writers never share it
        ids.tofile(tmp)
        tmp.replace(file)  # atomic: a crash never leaves a half-written cache
    return np.memmap(file, dtype=np.uint32, mode="r")


class TokenStream:
    """A tokenised corpus split into train/val streams, batched deterministically by step."""

    unit = "BPC"  # bits per byte of UTF-8 text (token_bytes counts each token's bytes)

    def __init__(
        self,
        tokens: np.ndarray,
        tokenizer,
        seq_len: int,
        batch_size: int,
        seed: int,
        val_fraction: float,
        eval_batch_size: int,
        eval_batches: int,
        name: str,
    ):
        n_val = int(len(tokens) * val_fraction)
        self.train_tokens, self.val_tokens = tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]
        for split, toks in (("train", self.train_tokens), ("validation", self.val_tokens)):
            if len(toks) < seq_len + 2:
                raise DataError(f"{name}: {split} split has {len(toks)} tokens, fewer than seq_len+2={seq_len + 2}")
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        self.token_bytes = tokenizer.token_bytes
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.eval_batch_size, self.eval_batches = eval_batch_size, eval_batches

    def train_batch(self, step: int) -> Batch:
        """Random windows of the train split; a pure function of (seed, step)."""
        hi = len(self.train_tokens) - self.seq_len - 1
        starts = step_rng(self.seed, step).integers(0, hi, size=self.batch_size)
        return windows_at(self.train_tokens, starts, self.seq_len)

    def val_batches(self) -> Iterator[Batch]:
        """Evenly spaced, fixed windows covering the validation split."""
        hi = len(self.val_tokens) - self.seq_len - 1
        n = self.eval_batches * self.eval_batch_size
        starts = np.linspace(0, hi, n).astype(np.int64)
        for i in range(self.eval_batches):
            yield windows_at(
                self.val_tokens, starts[i * self.eval_batch_size : (i + 1) * self.eval_batch_size], self.seq_len
            )

    def encode(self, text: str) -> np.ndarray:
        return self.tokenizer.encode(text)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids)
