"""Plasticity curriculum data: stages by step fraction, each with its own text.

Default stages (after AGIFORMER): < 0.15 → a word list from the corpus (dictionary-style),
< 0.40 → short lines (simple sentences), then the full text. The model's α stages
(``model.plasticity_stages``) follow the same fractions of ``model.curriculum_steps``. Validation
is always the full text's held-out split, so BPC is comparable across stages.
"""

from __future__ import annotations

from typing import Iterator, Literal

import numpy as np
from pydantic import Field

from spiraljax.config import Config, DataConfig
from spiraljax.data.base import Batch, DataError, step_rng, windows_at
from spiraljax.data.text import TokenStream, read_corpus
from spiraljax.data.tokenizers import ByteTokenizer

StageKind = Literal["words", "sentences", "full"]


class CurriculumDataConfig(DataConfig):
    source: Literal["curriculum"] = "curriculum"
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of the data held out for validation")
    path: str = Field("data/tinyshakespeare.txt", description="UTF-8 corpus, read as bytes")
    stages: list[tuple[float, StageKind]] = Field(
        [(0.15, "words"), (0.40, "sentences"), (1.0, "full")],
        description="[(end fraction of train.steps, what is trained on), ...]; the last stage after that",
    )
    max_sentence_chars: int = Field(48, gt=0, description="longest line kept by the sentences stage")

    def build(self, cfg: Config) -> "CurriculumData":
        return CurriculumData(cfg)


def stage_texts(text: str, max_sentence_chars: int) -> dict[str, str]:
    """The three stage corpora built from one text (train split only)."""
    words = sorted({w.strip(".,;:!?'\"-()").lower() for w in text.split()} - {""})
    lines = [ln.strip() for ln in text.splitlines() if 0 < len(ln.strip()) <= max_sentence_chars]
    return {"words": "\n".join(words) + "\n", "sentences": "\n".join(lines) + "\n", "full": text}


class CurriculumData:
    def __init__(self, cfg: Config):
        d: CurriculumDataConfig = cfg.data  # type: ignore[assignment]
        tok = ByteTokenizer()
        text = read_corpus(d.path)
        n_val = int(len(text) * d.val_fraction)
        full = TokenStream(
            tok.encode(text),
            tok,
            cfg.model.seq_len,
            cfg.train.batch_size,
            cfg.train.seed,
            d.val_fraction,
            cfg.eval.batch_size,
            cfg.eval.batches,
            d.path,
        )
        self.full, self.tokenizer = full, tok
        self.vocab_size, self.token_bytes = tok.vocab_size, tok.token_bytes
        texts = stage_texts(text[: len(text) - n_val], d.max_sentence_chars)
        self.stage_tokens = {k: tok.encode(v) for k, v in texts.items()}
        for k, v in self.stage_tokens.items():
            if len(v) < cfg.model.seq_len + 2:
                raise DataError(f"{d.path}: curriculum stage {k!r} has only {len(v)} bytes")
        self.ends = [e for e, _ in d.stages]
        self.kinds = [k for _, k in d.stages]
        self.total = cfg.train.steps
        self.seq_len, self.batch_size, self.seed = cfg.model.seq_len, cfg.train.batch_size, cfg.train.seed

    def stage(self, step: int) -> str:
        i = int(np.searchsorted(self.ends, step / self.total, side="right"))
        return self.kinds[min(i, len(self.kinds) - 1)]

    def train_batch(self, step: int) -> Batch:
        tokens = self.stage_tokens[self.stage(step)]
        starts = step_rng(self.seed, step).integers(0, len(tokens) - self.seq_len - 1, size=self.batch_size)
        return windows_at(tokens, starts, self.seq_len)

    def val_batches(self) -> Iterator[Batch]:
        return self.full.val_batches()

    def encode(self, text: str) -> np.ndarray:
        return self.tokenizer.encode(text)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids)
