"""Byte and BPE (tiktoken-format) tokenizers, both usable offline.

BPE ranks are a tiktoken ``.tiktoken`` file (base64 token, rank per line). The
project trains and ships ranks for TinyShakespeare (``data/tinyshakespeare_bpe.tiktoken``,
built by ``python -m spiraljax.data.tokenizers train-bpe``); a named tiktoken
encoding (e.g. ``gpt2``) is used only if its file is already in the local cache.
"""

from __future__ import annotations

import argparse
import base64
import collections
from pathlib import Path

import numpy as np

from spiraljax.data.base import DataError

# GPT-2 style pre-tokeniser without \p classes beyond what tiktoken's regex supports.
SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class ByteTokenizer:
    """UTF-8 bytes: ids 0..255, one byte per token."""

    vocab_size = 256
    name = "byte"

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        return bytes(int(i) & 0xFF for i in np.asarray(ids).ravel()).decode("utf-8", errors="replace")

    @property
    def token_bytes(self) -> np.ndarray:
        return np.ones(256, np.float32)


class BPETokenizer:
    """A tiktoken ``Encoding`` built from a local ranks file or a cached named encoding."""

    def __init__(self, source: str):
        import tiktoken

        path = Path(source)
        if path.suffix == ".tiktoken" or path.exists():
            if not path.is_file():
                raise DataError(
                    f"{path}: BPE ranks file not found (build it with `python -m spiraljax.data.tokenizers train-bpe`)"
                )
            ranks = load_ranks(path)
            self.enc = tiktoken.Encoding(
                name=path.stem, pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={}
            )
        else:
            try:
                self.enc = tiktoken.get_encoding(source)
            except Exception as err:  # network download impossible offline
                raise DataError(
                    f"BPE encoding {source!r} is not cached locally and cannot be downloaded "
                    f"({type(err).__name__}); use a .tiktoken ranks file instead"
                ) from None
        self.name = f"bpe:{self.enc.name}"
        self.vocab_size = self.enc.n_vocab

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.enc.encode_ordinary(text), dtype=np.int32)

    def decode(self, ids) -> str:
        return self.enc.decode([int(i) for i in np.asarray(ids).ravel()])

    @property
    def token_bytes(self) -> np.ndarray:
        return np.array([len(self.enc.decode_single_token_bytes(i)) for i in range(self.vocab_size)], np.float32)


def load_ranks(path: Path) -> dict[bytes, int]:
    ranks = {}
    for n, line in enumerate(path.read_text(encoding="ascii").splitlines(), 1):
        if not line.strip():
            continue
        try:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
        except ValueError:
            raise DataError(f"{path}:{n}: malformed BPE rank line") from None
    return ranks


def train_bpe(text: str, vocab_size: int) -> dict[bytes, int]:
    """Byte-level BPE: start from 256 bytes, repeatedly merge the most frequent adjacent pair.

    Works on pre-tokenised word counts (so merges never cross word boundaries),
    exactly as tiktoken applies them.
    """
    import regex

    if vocab_size < 256:
        raise DataError(f"BPE vocab_size must be ≥ 256, got {vocab_size}")
    words = collections.Counter(regex.findall(SPLIT_PATTERN, text))
    seqs = {w: [bytes([b]) for b in w.encode("utf-8")] for w in words}
    ranks = {bytes([i]): i for i in range(256)}
    while len(ranks) < vocab_size:
        pairs: collections.Counter = collections.Counter()
        for w, parts in seqs.items():
            for a, b in zip(parts, parts[1:]):
                pairs[a, b] += words[w]
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merged = a + b
        ranks[merged] = len(ranks)
        for w, parts in seqs.items():
            if len(parts) < 2:
                continue
            out, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            seqs[w] = out
    return ranks


def save_ranks(ranks: dict[bytes, int], path: Path) -> None:
    lines = [f"{base64.b64encode(tok).decode()} {rank}" for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1])]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def build_tokenizer(name: str, bpe_path: str | None = None):
    if name == "byte":
        return ByteTokenizer()
    if name == "bpe":
        from spiraljax.config import resolve_path

        local = bpe_path and bpe_path.endswith(".tiktoken")
        return BPETokenizer(str(resolve_path(bpe_path)) if local else (bpe_path or "gpt2"))
    raise DataError(f"unknown tokenizer {name!r} (byte | bpe)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m spiraljax.data.tokenizers")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train-bpe", help="train BPE ranks from a corpus and write a .tiktoken file")
    t.add_argument("--corpus", default="data/tinyshakespeare.txt")
    t.add_argument("--vocab-size", type=int, default=512)
    t.add_argument("--output", default="data/tinyshakespeare_bpe.tiktoken")
    args = p.parse_args(argv)
    text = Path(args.corpus).read_text(encoding="utf-8")
    ranks = train_bpe(text, args.vocab_size)
    save_ranks(ranks, Path(args.output))
    print(f"wrote {len(ranks)} ranks to {args.output}")


if __name__ == "__main__":
    main()
