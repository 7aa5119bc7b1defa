"""The long-document corpus (``data.source: longdocs``): byte-level documents of tens of kilobytes, read
window by window by a document-aware batcher, for training and evaluation with carried state
(docs/long_context.md, docs/carried_state.md).

Two corpora (``corpus``):

* ``python`` — every ``.py`` file of at least ``min_doc_bytes`` in the distributions ``packages``
  (pure-Python wheels pinned in requirements.lock, so the same bytes on every machine), found through
  ``importlib.metadata`` and ordered by (distribution, path). A document's split is fixed by its
  name ``"dist/path"``: h = (first 8 bytes of SHA-256(name)) / 2⁶⁴; train if h < 1 − val − test,
  validation if h < 1 − test, else test.
* ``shakespeare`` — TinyShakespeare read as one continuous stream: the last ``test_fraction`` of its
  bytes is test, the ``val_fraction`` before it validation, the rest train, and each part is cut into
  segments of ``segment_bytes`` that act as documents.

Corpus SHA-256 = SHA-256 over the documents in order of ``name ‖ 0x00 ‖ len (8 bytes, little endian)
‖ bytes``. The corpus is written once to ``cache_dir`` as ``longdocs-<corpus>-<sha>.u8`` (the flat
bytes), ``.offsets.npy`` (int64 ``[n_docs + 1]``) and ``.json`` (manifest, written last: its presence
means the others are complete), each atomically (per-process tmp file + rename), and read back with
``np.memmap``. Building it reads one document at a time, so no process ever holds the whole corpus.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Literal

import numpy as np
from pydantic import Field, model_validator

from spiraljax.config import PROJECT_ROOT, Config, DataConfig, resolve_path
from spiraljax.data.base import Batch, DataError

PYTHON_PACKAGES = ("jax", "flax", "optax", "orbax-checkpoint", "chex", "pydantic")
SPLITS = ("train", "val", "test")
TRAIN_STREAM = 20_240_601  # the rng stream of the per-row document permutations


class LongDocsConfig(DataConfig):
    source: Literal["longdocs"] = "longdocs"
    corpus: Literal["python", "shakespeare"] = Field(
        "python",
        description="python: the .py files of the pinned packages; shakespeare: TinyShakespeare "
        "as one stream cut into segments",
    )
    packages: list[str] = Field(
        default_factory=lambda: list(PYTHON_PACKAGES),
        description="python corpus: the distributions whose .py files are the documents",
    )
    min_doc_bytes: int = Field(8192, gt=1, description="python corpus: smallest file kept as a document (bytes)")
    min_total_bytes: int = Field(10_000_000, ge=0, description="python corpus: refuse a corpus smaller than this")
    path: str = Field("data/tinyshakespeare.txt", description="shakespeare corpus: the text file")
    segment_bytes: int = Field(32768, gt=1, description="shakespeare corpus: bytes per segment (document)")
    val_fraction: float = Field(
        0.05,
        gt=0.0,
        lt=1.0,
        description="share of the corpus held out for validation "
        "(python: of the documents, by name hash; "
        "shakespeare: of the bytes, by position)",
    )
    test_fraction: float = Field(
        0.05, ge=0.0, lt=1.0, description="share held out for the test split (as val_fraction)"
    )
    cache_dir: str = Field(".cache/longdocs", description="where the built corpus is cached (memory-mapped)")

    @model_validator(mode="after")
    def _fractions(self) -> "LongDocsConfig":
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction} leaves no training data"
            )
        return self

    def build(self, cfg: Config) -> "LongDocs":
        if cfg.model.vocab_size < 256:
            raise DataError(
                f"model.vocab_size={cfg.model.vocab_size} is smaller than the 256 byte values of the longdocs corpus"
            )
        if self.corpus == "python":
            docs = python_documents(self.packages, self.min_doc_bytes, self.val_fraction, self.test_fraction)
            total = sum(d.size for d in docs)
            if total < self.min_total_bytes:
                raise DataError(
                    f"data.packages: the python corpus has {total:,} bytes in {len(docs)} files of at "
                    f"least {self.min_doc_bytes} bytes, fewer than data.min_total_bytes="
                    f"{self.min_total_bytes:,}"
                )
        else:
            docs = stream_segments(self.path, self.segment_bytes, self.val_fraction, self.test_fraction)
        corpus = cached_corpus(self.corpus, docs, self.cache_dir)
        return LongDocs(
            corpus, cfg.model.seq_len, cfg.train.batch_size, cfg.train.seed, cfg.eval.batch_size, cfg.eval.batches
        )


# ----------------------------------------------------------------------------- documents
@dataclass(frozen=True)
class DocSpec:
    """One document before it is cached: its name, split, size and how to read its bytes."""

    name: str
    split: str
    size: int
    read: Callable[[], bytes]


def hash_split(name: str, val_fraction: float, test_fraction: float) -> str:
    """The split of a document by its name: h = SHA-256(name)[:8] / 2⁶⁴ (stable, not positional)."""
    h = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little") / 2.0**64
    return "train" if h < 1.0 - val_fraction - test_fraction else "val" if h < 1.0 - test_fraction else "test"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path = PROJECT_ROOT / "requirements.lock") -> dict[str, str]:
    """``{normalised name: version}`` of the ``name==version`` lines of requirements.lock ({} if absent)."""
    if not lock.is_file():
        return {}
    pins = (
        ln.split("==", 1)
        for ln in lock.read_text(encoding="utf-8").splitlines()
        if "==" in ln and not ln.lstrip().startswith("#")
    )
    return {_norm(n.strip()): v.strip() for n, v in pins}


def python_documents(
    packages: list[str], min_doc_bytes: int, val_fraction: float, test_fraction: float
) -> list[DocSpec]:
    """The ``.py`` files of at least ``min_doc_bytes`` of each distribution, ordered by (distribution,
    path); a missing distribution is a one-line DataError, a version other than the lock's a warning."""
    pins = locked_versions()
    docs: list[DocSpec] = []
    for pkg in sorted({_norm(p) for p in packages}):
        try:
            dist = metadata.distribution(pkg)
        except metadata.PackageNotFoundError:
            raise DataError(
                f"data.packages: {pkg!r} is not installed (the longdocs python corpus reads its "
                f".py files; install requirements.lock or drop it from data.packages)"
            ) from None
        if dist.files is None:
            raise DataError(f"data.packages: {pkg!r} {dist.version} has no file list (RECORD); reinstall it")
        if pkg in pins and pins[pkg] != dist.version:
            print(
                f"warning: longdocs corpus: {pkg} {dist.version} is installed but requirements.lock pins "
                f"{pins[pkg]}; the corpus (and its SHA-256) differs from the locked one",
                file=sys.stderr,
            )
        for f in sorted(dist.files, key=lambda f: f.as_posix()):
            if f.suffix != ".py":
                continue
            path = Path(f.locate())
            size = path.stat().st_size if path.is_file() else 0
            if size >= min_doc_bytes:
                name = f"{pkg}/{f.as_posix()}"
                docs.append(DocSpec(name, hash_split(name, val_fraction, test_fraction), size, path.read_bytes))
    return docs


def stream_segments(path: str, segment_bytes: int, val_fraction: float, test_fraction: float) -> list[DocSpec]:
    """One text as a stream: train / val / test by position (test last), each cut into segments."""
    p = resolve_path(path)
    if not p.is_file():
        raise DataError(f"{path}: corpus file not found (data.path of the shakespeare corpus)")
    n = p.stat().st_size
    n_test, n_val = int(n * test_fraction), int(n * val_fraction)
    bounds = {"train": (0, n - n_val - n_test), "val": (n - n_val - n_test, n - n_test), "test": (n - n_test, n)}

    def reader(lo: int, hi: int) -> Callable[[], bytes]:
        def read() -> bytes:
            with p.open("rb") as fh:
                fh.seek(lo)
                return fh.read(hi - lo)

        return read

    docs = []
    for split, (lo, hi) in bounds.items():
        for start in range(lo, hi, segment_bytes):
            end = min(start + segment_bytes, hi)
            docs.append(DocSpec(f"{p.stem}/{start}", split, end - start, reader(start, end)))
    return docs


# ----------------------------------------------------------------------------- the cache
@dataclass(frozen=True)
class Corpus:
    """A cached corpus: flat bytes (memmap), document offsets, names, splits and its SHA-256."""

    name: str
    sha256: str
    data: np.memmap
    offsets: np.ndarray  # int64 [n_docs + 1]
    names: tuple[str, ...]
    splits: tuple[str, ...]


def _digest(docs: list[DocSpec], sink: BinaryIO | None = None) -> str:
    """The corpus SHA-256 (module docstring); each document's bytes also go to ``sink`` if given."""
    h = hashlib.sha256()
    for d in docs:
        raw = d.read()
        if len(raw) != d.size:
            raise DataError(f"{d.name}: changed while the longdocs corpus was read ({d.size} → {len(raw)} bytes)")
        h.update(d.name.encode("utf-8") + b"\0" + len(raw).to_bytes(8, "little"))
        h.update(raw)
        if sink is not None:
            sink.write(raw)
    return h.hexdigest()


def _atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: concurrent builders never share it
    with tmp.open("wb") as fh:
        write(fh)
    tmp.replace(path)  # atomic: a reader sees the whole file or none


def cached_corpus(name: str, docs: list[DocSpec], cache_dir: str | Path) -> Corpus:
    """Hash ``docs``; write them once to ``cache_dir`` (named by the hash) and memory-map them."""
    if not docs:
        raise DataError(f"longdocs {name} corpus: no documents")
    sha = _digest(docs)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    stem = cache / f"longdocs-{name}-{sha}"
    data_file, offsets_file, manifest = (stem.with_name(stem.name + s) for s in (".u8", ".offsets.npy", ".json"))
    offsets = np.concatenate([[0], np.cumsum([d.size for d in docs])]).astype(np.int64)
    if not (manifest.is_file() and data_file.is_file() and data_file.stat().st_size == offsets[-1]):

        def write_data(fh: BinaryIO) -> None:
            if _digest(docs, fh) != sha:
                raise DataError(f"longdocs {name} corpus: a source file changed while the corpus was built")

        _atomic(data_file, write_data)
        _atomic(offsets_file, lambda fh: np.save(fh, offsets))
        info = {"sha256": sha, "corpus": name, "bytes": int(offsets[-1]), "documents": [d.name for d in docs]}
        _atomic(manifest, lambda fh: fh.write(json.dumps(info, indent=0).encode("utf-8")))
    data = np.memmap(data_file, dtype=np.uint8, mode="r")
    return Corpus(name, sha, data, offsets, tuple(d.name for d in docs), tuple(d.split for d in docs))


# ----------------------------------------------------------------------------- the dataset
def n_windows(length: int, seq_len: int) -> int:
    """Windows of ``seq_len`` inputs (each with its next byte as target) in a document: ⌈(L − 1) / T⌉."""
    return max(length - 1 + seq_len - 1, 0) // seq_len


class LongDocs:
    """Document streams of a :class:`Corpus`, batched by (seed, step) with ``reset`` / ``doc_pos``.

    Train: batch row r reads, in epoch e, the train documents in the order of a permutation drawn
    from (seed, r, e); step s gives every row its next window of ``seq_len`` bytes (window k of a
    document holds inputs [kT, kT + T) and targets [kT + 1, kT + T + 1)). A document's last window is
    padded (mask 0) and the next document starts at the next window, with ``reset`` True. Every row's
    epoch has the same number of windows W (a permutation does not change it), so step s is window
    s mod W of epoch s div W: a pure function of (seed, step).
    """

    vocab_size = 256
    token_bytes = np.ones(256, np.float32)
    unit = "BPC"

    def __init__(
        self, corpus: Corpus, seq_len: int, batch_size: int, seed: int, eval_batch_size: int, eval_batches: int
    ):
        self.corpus, self.sha256, self.name = corpus, corpus.sha256, corpus.name
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.eval_batch_size, self.eval_batches = eval_batch_size, eval_batches
        lengths = np.diff(corpus.offsets)
        self.windows = np.array([n_windows(int(n), seq_len) for n in lengths], np.int64)
        self.split_docs = {s: np.array([i for i, x in enumerate(corpus.splits) if x == s], np.int64) for s in SPLITS}
        for split in ("train", "val"):
            if not self.windows[self.split_docs[split]].sum():
                raise DataError(
                    f"longdocs {corpus.name} corpus: the {split} split holds no window "
                    f"({len(self.split_docs[split])} documents; change data.val_fraction, "
                    f"data.test_fraction, data.packages or data.segment_bytes)"
                )
        self.epoch_windows = int(self.windows[self.split_docs["train"]].sum())
        self.split_sizes = {s: (len(d), int(lengths[d].sum())) for s, d in self.split_docs.items()}
        self._epochs: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def describe(self) -> str:
        """One line: corpus, SHA-256, documents and bytes per split."""
        parts = ", ".join(f"{s} {n} docs {b / 1e6:.2f} MB" for s, (n, b) in self.split_sizes.items())
        return (
            f"longdocs/{self.name} corpus sha256 {self.sha256}: {len(self.corpus.names)} documents, "
            f"{len(self.corpus.data) / 1e6:.2f} MB ({parts})"
        )

    # ------------------------------------------------------------------ windows
    def window(self, doc: int, k: int) -> tuple[np.ndarray, int]:
        """Window k of document ``doc``: ``T + 1`` bytes (zero-padded past the document) and how many are real."""
        lo, hi = int(self.corpus.offsets[doc]), int(self.corpus.offsets[doc + 1])
        start = lo + k * self.seq_len
        n = min(self.seq_len + 1, hi - start)
        chunk = np.zeros(self.seq_len + 1, np.int32)
        chunk[:n] = self.corpus.data[start : start + n]
        return chunk, n

    def batch_of(self, rows: list[tuple[int, int] | None]) -> Batch:
        """The batch whose row i is window ``rows[i] = (doc, k)``; None: an empty row (mask 0, reset)."""
        t = self.seq_len
        chunks = np.zeros((len(rows), t + 1), np.int32)
        mask = np.zeros((len(rows), t), np.float32)
        reset = np.ones(len(rows), bool)
        doc_pos = np.zeros(len(rows), np.int32)
        for i, row in enumerate(rows):
            if row is None:
                continue
            doc, k = row
            chunks[i], n = self.window(doc, k)
            mask[i, : n - 1] = 1.0
            reset[i], doc_pos[i] = k == 0, k * t
        return {"inputs": chunks[:, :-1], "targets": chunks[:, 1:], "mask": mask, "reset": reset, "doc_pos": doc_pos}

    def _epoch(self, row: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``row``'s train documents in epoch ``epoch`` and the cumulative window counts (memoised:
        a value of (seed, row, epoch) only)."""
        key = (row, epoch)
        if key not in self._epochs:
            if len(self._epochs) >= 4 * self.batch_size:
                self._epochs.clear()
            rng = np.random.default_rng([int(self.seed) & 0xFFFFFFFF, row, epoch, TRAIN_STREAM])
            order = rng.permutation(self.split_docs["train"])
            self._epochs[key] = (order, np.cumsum(self.windows[order]))
        return self._epochs[key]

    def train_position(self, row: int, step: int) -> tuple[int, int]:
        """(document, window) that batch row ``row`` reads at ``step``."""
        epoch, k = divmod(int(step), self.epoch_windows)
        order, ends = self._epoch(row, epoch)
        j = int(np.searchsorted(ends, k, side="right"))  # documents of zero windows are skipped
        return int(order[j]), k - (int(ends[j - 1]) if j else 0)

    def train_batch(self, step: int) -> Batch:
        """Every row's next window of its own document stream: a pure function of (seed, step)."""
        return self.batch_of([self.train_position(r, step) for r in range(self.batch_size)])

    def val_batches(self) -> Iterator[Batch]:
        """``eval.batches`` consecutive windows per row: row r reads validation documents r, r + B,
        r + 2B, … from their starts (``reset`` at each start); a row past its documents is empty
        (mask 0). The same batches every call, so a carried evaluation is comparable across steps."""
        docs = self.split_docs["val"]
        b = self.eval_batch_size
        per_row = []
        for r in range(b):
            seq = [(int(d), k) for d in docs[r::b] for k in range(int(self.windows[d]))]
            per_row.append(seq[: self.eval_batches] + [None] * (self.eval_batches - len(seq)))
        for i in range(self.eval_batches):
            yield self.batch_of([per_row[r][i] for r in range(b)])

    # ------------------------------------------------------------------ whole documents
    def documents(
        self, split: str = "val", max_docs: int | None = None, max_bytes: int | None = None
    ) -> list[np.ndarray]:
        """The documents of ``split`` in corpus order, as uint8 memmap slices (the first ``max_bytes`` of
        each; at most ``max_docs``): the long-context evaluation reads them whole."""
        if split not in self.split_docs:
            raise DataError(f"longdocs: unknown split {split!r} (choose from {', '.join(SPLITS)})")
        docs = self.split_docs[split][:max_docs]
        off = self.corpus.offsets
        return [
            self.corpus.data[off[d] : off[d + 1] if max_bytes is None else min(off[d + 1], off[d] + max_bytes)]
            for d in docs
        ]

    def document_names(self, split: str = "val") -> list[str]:
        return [self.corpus.names[d] for d in self.split_docs[split]]

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        return bytes(np.asarray(ids, np.uint8).ravel().tolist()).decode("utf-8", errors="replace")
