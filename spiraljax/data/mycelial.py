"""Mycelial training data: conditions → contemplative glyph sequences, deterministic per seed.

Record: ``{conditions: [latency, voltage, temperature, error_rate, bandwidth], glyph_sequence:
[symbols], effectiveness: float, metadata: {...}, text_input: str | null}``. Scenarios: *problem*
(repair glyphs of the faulty subsystem + contemplative silence), *calm* (mostly silence), *wisdom*
(question → metaphorical glyph answer). Silence-majority but never silence-only.

CLI: ``python -m spiraljax.data.mycelial --num_echoes 1000 [--chaos_mode] --seed 0 --output F.jsonl``.
As a data source (``data.source: mycelial``) records are generated in memory (or read from
``data.path``) and batched as PAD-padded sequences with ``conditions`` as a model input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
from pydantic import Field

from spiraljax.config import Config, DataConfig, resolve_path
from spiraljax.data import glyphs
from spiraljax.data.base import Batch, DataError, step_rng

QUESTIONS = (
    "What does the forest know about waiting?",
    "How should a network grieve a lost node?",
    "When is silence the right repair?",
    "What grows after the fire?",
    "How do roots share water?",
    "What does the tide teach a battery?",
    "Why does the spiral return?",
    "How do we rest while serving?",
)
FAULTS = {  # fault → (condition edits, repair category)
    "latency": ({0: (0.75, 1.0)}, "NETWORK"),
    "bandwidth": ({4: (0.0, 0.25)}, "NETWORK"),
    "packet_loss": ({3: (0.6, 1.0)}, "NETWORK"),
    "power_low": ({1: (0.0, 0.2)}, "ENERGY"),
    "power_surge": ({1: (0.85, 1.0)}, "ENERGY"),
    "overheat": ({2: (0.85, 1.0)}, "HEALTH"),
    "drought": ({2: (0.7, 0.9), 3: (0.3, 0.5)}, "HEALTH"),
}
CALM = [(0.0, 0.2), (0.45, 0.55), (0.4, 0.6), (0.0, 0.1), (0.7, 1.0)]


def _calm_conditions(rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.uniform(lo, hi) for lo, hi in CALM])


def _silences(rng: np.random.Generator, n: int) -> list[str]:
    quiet = [glyphs.GLYPHS[i].symbol for i in glyphs.SILENCE_IDS if i != glyphs.PAD_ID]
    return ["…" if rng.random() < 0.6 else str(rng.choice(quiet)) for _ in range(n)]


def _weave(rng: np.random.Generator, active: list[str], min_len: int, max_len: int) -> list[str]:
    """Interleave active glyphs with silence so silence is the majority (never the whole)."""
    n = int(rng.integers(min_len, max_len + 1))
    n = max(n, 2 * len(active) + 1)
    seq = _silences(rng, n)
    slots = sorted(rng.choice(np.arange(1, n), size=len(active), replace=False).tolist())
    for s, g in zip(slots, active):
        seq[s] = g
    return seq


def problem(rng: np.random.Generator, chaos: bool) -> dict:
    n_faults = int(rng.integers(2, 4)) if chaos and rng.random() < 0.5 else 1
    names = list(rng.choice(sorted(FAULTS), size=n_faults, replace=False))
    cond = _calm_conditions(rng)
    active: list[str] = []
    for name in names:
        edits, category = FAULTS[name]
        for idx, (lo, hi) in edits.items():
            cond[idx] = rng.uniform(lo, hi)
        pool = glyphs.ids_of(category)
        active += [glyphs.GLYPHS[i].symbol for i in rng.choice(pool, size=int(rng.integers(2, 4)), replace=False)]
    if chaos:
        cond = np.clip(cond + rng.normal(0, 0.05, 5), 0, 1)
    seq = _weave(rng, active, 10, 24)
    return {
        "conditions": cond,
        "glyph_sequence": seq,
        "effectiveness": float(rng.uniform(0.6, 1.0)),
        "metadata": {"scenario": "problem", "faults": names},
        "text_input": None,
    }


def calm(rng: np.random.Generator, chaos: bool) -> dict:
    gentle = [str(rng.choice(["🌱regen", "🌙rest", "🕯️glow", "🌿grow", "📨ack"]))]
    return {
        "conditions": _calm_conditions(rng),
        "glyph_sequence": _weave(rng, gentle, 8, 20),
        "effectiveness": float(rng.uniform(0.8, 1.0)),
        "metadata": {"scenario": "calm"},
        "text_input": None,
    }


def wisdom(rng: np.random.Generator, chaos: bool) -> dict:
    q = int(rng.integers(len(QUESTIONS)))
    motifs = [
        ["🌱regen", "🌲44", "🌀spiral"],
        ["🍄spore", "🕸️mesh", "🌿grow"],
        ["🌊tide", "🔋store", "🌙rest"],
        ["🍂shed", "🌱regen", "✨wonder"],
    ]
    answer = motifs[q % len(motifs)][: int(rng.integers(2, 4))]
    return {
        "conditions": _calm_conditions(rng),
        "glyph_sequence": _weave(rng, answer, 8, 18),
        "effectiveness": float(rng.uniform(0.5, 0.9)),
        "metadata": {"scenario": "wisdom", "question_id": q},
        "text_input": QUESTIONS[q],
    }


def generate_records(num_echoes: int, seed: int = 0, chaos_mode: bool = False) -> list[dict]:
    """``num_echoes`` records, a pure function of (num_echoes, seed, chaos_mode)."""
    rng = np.random.default_rng(seed)
    makers = (problem, calm, wisdom)
    probs = (0.5, 0.3, 0.2) if not chaos_mode else (0.7, 0.15, 0.15)
    out = []
    for _ in range(num_echoes):
        rec = makers[int(rng.choice(3, p=probs))](rng, chaos_mode)
        rec["conditions"] = [round(float(c), 4) for c in rec["conditions"]]
        out.append(rec)
    return out


def read_jsonl(path: str | Path) -> list[dict]:
    p = resolve_path(path)
    if not p.is_file():
        raise DataError(f"{path}: mycelial JSONL not found")
    records = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            cond = rec["conditions"]
            rec["glyph_sequence"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{path}:{n}: not a mycelial record ({type(err).__name__}: {err})") from None
        if len(cond) != 5:
            raise DataError(f"{path}:{n}: conditions must have 5 values, got {len(cond)}")
        records.append(rec)
    if not records:
        raise DataError(f"{path}: no records")
    return records


class MycelialDataConfig(DataConfig):
    source: Literal["mycelial"] = "mycelial"
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of the data held out for validation")
    path: str | None = Field(None, description="JSONL of records to read (null: generate them in memory)")
    num_echoes: int = Field(4000, gt=0, description="records to generate")
    chaos_mode: bool = Field(True, description="generate with random (chaotic) field conditions")
    seed: int = Field(0, description="seed of the generated records")

    def build(self, cfg: Config) -> "MycelialDataset":
        if cfg.model.vocab_size < glyphs.VOCAB_SIZE:
            raise DataError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the glyph vocabulary (65)")
        records = read_jsonl(self.path) if self.path else generate_records(self.num_echoes, self.seed, self.chaos_mode)
        return MycelialDataset(
            records,
            cfg.model.seq_len,
            cfg.train.batch_size,
            cfg.train.seed,
            self.val_fraction,
            cfg.eval.batch_size,
            cfg.eval.batches,
        )


class MycelialDataset:
    """PAD-prefixed, PAD-padded glyph sequences with their conditions."""

    vocab_size = glyphs.VOCAB_SIZE
    token_bytes = np.ones(glyphs.VOCAB_SIZE, np.float32)  # "characters" are glyphs
    unit = "bits/glyph"  # so the 'bpc' number is bits per glyph, not per character

    def __init__(
        self,
        records: list[dict],
        seq_len: int,
        batch_size: int,
        seed: int,
        val_fraction: float,
        eval_batch_size: int,
        eval_batches: int,
    ):
        n = len(records)
        tokens = np.zeros((n, seq_len + 1), np.int32)  # position 0 = PAD acts as the start symbol
        for r, rec in enumerate(records):
            ids = glyphs.encode(rec["glyph_sequence"], record=r)[:seq_len]
            tokens[r, 1 : 1 + len(ids)] = ids
        self.tokens = tokens
        self.conditions = np.asarray([rec["conditions"] for rec in records], np.float32)
        n_val = max(1, int(n * val_fraction))
        if n - n_val < 1:
            raise DataError(f"mycelial data: {n} records are too few for a train/validation split")
        self.train_idx, self.val_idx = np.arange(n - n_val), np.arange(n - n_val, n)
        self.batch_size, self.seed = batch_size, seed
        self.eval_batch_size, self.eval_batches = eval_batch_size, eval_batches

    def _batch(self, idx: np.ndarray) -> Batch:
        chunk = self.tokens[idx]
        targets = chunk[:, 1:]
        return {
            "inputs": chunk[:, :-1],
            "targets": targets,
            "mask": (targets != glyphs.PAD_ID).astype(np.float32),
            "conditions": self.conditions[idx],
        }

    def train_batch(self, step: int) -> Batch:
        return self._batch(step_rng(self.seed, step).choice(self.train_idx, size=self.batch_size))

    def val_batches(self) -> Iterator[Batch]:
        for i in range(self.eval_batches):
            idx = np.take(
                self.val_idx, np.arange(i * self.eval_batch_size, (i + 1) * self.eval_batch_size), mode="wrap"
            )
            yield self._batch(idx)

    def encode(self, text: str) -> np.ndarray:
        """A prompt of space-separated glyph symbols → ids (one-line GlyphError naming an unknown one)."""
        try:
            return glyphs.encode(text.split())
        except glyphs.GlyphError as err:
            raise glyphs.GlyphError(
                f"glyph prompt {text!r}: {err}; a prompt is glyph symbols separated by "
                f"spaces, e.g. '… 🌱regen' (all {glyphs.VOCAB_SIZE - 1}: spiraljax.data.glyphs)"
            ) from None

    def decode(self, ids) -> str:
        return " ".join(glyphs.decode(ids, strip_pad=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m spiraljax.data.mycelial",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--num_echoes", type=int, default=1000)
    p.add_argument("--chaos_mode", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", "--output_file", dest="output", default="data/mycelial_training_data.jsonl")
    args = p.parse_args(argv)
    if args.num_echoes <= 0:
        print("error: --num_echoes must be positive", file=sys.stderr)
        return 2
    records = generate_records(args.num_echoes, args.seed, args.chaos_mode)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    silence = np.mean([np.mean(glyphs.is_silence(glyphs.encode(r["glyph_sequence"]))) for r in records])
    print(f"wrote {len(records)} records to {out} (mean silence fraction {silence:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
