"""Long-range recall probe: key–value identifiers defined in the first window of real code, queried
d windows later (docs/results/long_context.md explains the design).

A probe row is ``(max(distances) + 1) · T + 1`` bytes, read in windows of T (the run's ``seq_len``):

* window 0: real code with ``len(distances) · pairs`` definitions ``def <key>_<value>(x): return x``
  inserted, whole, between its lines;
* window d, for each d in ``distances``: real code with the ``pairs`` queries of the keys assigned to
  d, ``    y = <key>_<value>(y)``, inserted the same way;
* every other window: the code continues (filler).

Keys and values are ``KEY_LEN`` / ``VALUE_LEN`` letters drawn uniformly from a–z (distinct within a
row), from ``numpy.random.default_rng([seed, row, PROBE_STREAM])``. A query is scored on its value
bytes, teacher-forced: the prediction at the ``_`` after the key (first byte) and at every value byte
(all bytes). The values are independent of everything outside window 0, so a model that has lost
window 0 scores exactly chance in expectation: ``1/26`` for one byte, ``(1/26)^VALUE_LEN`` for all.
A model that knows which values window 0 defined but not which key each belongs to (a uniform guess
among the row's P values) scores ``#{values sharing the first letter} / P`` and ``1 / P``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Sequence

import numpy as np

ALPHABET = string.ascii_lowercase.encode()  # the letters keys and values are drawn from
KEY_LEN = 4
VALUE_LEN = 4
PROBE_STREAM = 20_240_624  # the rng stream of the probe rows


def definition_line(key: bytes, value: bytes) -> bytes:
    return b"def " + key + b"_" + value + b"(x): return x\n"


def query_line(key: bytes, value: bytes) -> bytes:
    return b"    y = " + key + b"_" + value + b"(y)\n"


# where the value starts inside its line (the scored bytes)
DEFINITION_VALUE_AT = len(b"def ") + KEY_LEN + 1
QUERY_VALUE_AT = len(b"    y = ") + KEY_LEN + 1


@dataclass(frozen=True)
class Query:
    distance: int  # windows between the definition window (0) and this query's window
    value_start: int  # position of the first value byte in the row
    value: bytes
    guess_first: float  # uniform guess among the row's values: P(first value byte right)
    guess_all: float  # ... P(every value byte right)


@dataclass(frozen=True)
class ProbeRow:
    tokens: np.ndarray  # int32 [(max(distances) + 1) · T + 1]
    definitions: tuple[tuple[int, bytes, bytes], ...]  # (position of the value's first byte, key, value)
    queries: tuple[Query, ...]


def code_lines(documents: Sequence[np.ndarray], max_line: int = 100) -> list[bytes]:
    """The lines (with their newline) of ``documents`` that are printable ASCII and at most ``max_line``
    bytes: the real code the probe is made of."""
    ok = set(range(32, 127)) | {9, 10}
    lines = []
    for doc in documents:
        for line in bytes(np.asarray(doc, np.uint8)).split(b"\n"):
            line += b"\n"
            if len(line) <= max_line and set(line) <= ok:
                lines.append(line)
    return lines


class CodeStream:
    """Lines of real code from a start line on, cycling; a line cut by a window's end continues the next
    window (so filler windows are contiguous text)."""

    def __init__(self, lines: list[bytes], start: int):
        if not lines:
            raise ValueError("no code lines to build the probe from")
        self.lines, self.i, self.pending = lines, start % len(lines), b""

    def peek(self) -> bytes:
        return self.pending or self.lines[self.i]

    def take(self) -> bytes:
        if self.pending:
            out, self.pending = self.pending, b""
            return out
        out = self.lines[self.i]
        self.i = (self.i + 1) % len(self.lines)
        return out

    def give_back(self, rest: bytes) -> None:
        self.pending = rest + self.pending


def fill_window(probe: list[bytes], code: CodeStream, size: int) -> tuple[bytes, list[int]]:
    """``size`` bytes of code with each line of ``probe`` inserted whole at a line boundary, spread
    evenly (probe line i after about (i + 1)/(n + 1) of the code bytes); returns the window and the
    offset of each probe line in it."""
    spare = size - sum(map(len, probe))
    if spare < 0:
        raise ValueError(f"{len(probe)} probe lines of {sum(map(len, probe))} bytes do not fit a window of {size}")
    out, starts, code_bytes = bytearray(), [], 0
    for i, line in enumerate(probe):
        target = (i + 1) * spare // (len(probe) + 1)
        while code_bytes + len(code.peek()) <= target:
            piece = code.take()
            out += piece
            code_bytes += len(piece)
        starts.append(len(out))
        out += line
    while len(out) < size:
        out += code.take()
    if len(out) > size:
        code.give_back(bytes(out[size:]))
    return bytes(out[:size]), starts


def _distinct_words(rng: np.random.Generator, n: int, length: int) -> list[bytes]:
    words: list[bytes] = []
    while len(words) < n:
        w = bytes(ALPHABET[j] for j in rng.integers(0, len(ALPHABET), length))
        if w not in words:
            words.append(w)
    return words


def probe_row(lines: list[bytes], window: int, distances: Sequence[int], pairs: int, seed: int, row: int) -> ProbeRow:
    """One probe row (module docstring): a pure function of (lines, window, distances, pairs, seed, row)."""
    distances = sorted(set(int(d) for d in distances))
    if not distances or distances[0] < 1:
        raise ValueError(f"distances must be ≥ 1 windows, got {list(distances)}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(row), PROBE_STREAM])
    n = len(distances) * pairs
    keys, values = _distinct_words(rng, n, KEY_LEN), _distinct_words(rng, n, VALUE_LEN)
    order = rng.permutation(n)  # the order of the definitions in window 0
    asked = {d: list(range(k * pairs, (k + 1) * pairs)) for k, d in enumerate(distances)}  # pair ids per d
    code = CodeStream(lines, int(rng.integers(len(lines))))
    parts: list[bytes] = []
    definitions, queries = [], []
    firsts = [v[0] for v in values]
    for w in range(distances[-1] + 1):
        ids = [int(j) for j in order] if w == 0 else asked.get(w, [])
        make, value_at = (definition_line, DEFINITION_VALUE_AT) if w == 0 else (query_line, QUERY_VALUE_AT)
        text, starts = fill_window([make(keys[j], values[j]) for j in ids], code, window)
        for j, s in zip(ids, starts):
            pos = w * window + s + value_at
            if w == 0:
                definitions.append((pos, keys[j], values[j]))
            else:
                queries.append(Query(w, pos, values[j], firsts.count(values[j][0]) / n, 1.0 / n))
        parts.append(text)
    parts.append(code.take()[:1])  # the target of the last window's last input
    tokens = np.frombuffer(b"".join(parts), np.uint8).astype(np.int32)
    return ProbeRow(tokens, tuple(definitions), tuple(queries))


def probe_rows(
    lines: list[bytes], window: int, distances: Sequence[int], pairs: int, seed: int, rows: int
) -> list[ProbeRow]:
    return [probe_row(lines, window, distances, pairs, seed, r) for r in range(rows)]


def score(rows: Sequence[ProbeRow], predictions: np.ndarray) -> dict[int, dict[str, float]]:
    """Per distance: ``first`` (prediction at the ``_`` = the value's first byte), ``all`` (every value
    byte predicted right, teacher-forced) and ``queries``. ``predictions [R, L]``: the argmax at input
    position p, which predicts byte p + 1 (−1 where not computed)."""
    out: dict[int, dict[str, float]] = {}
    for r, row in enumerate(rows):
        for q in row.queries:
            lo = q.value_start
            want = row.tokens[lo : lo + len(q.value)]
            got = predictions[r, lo - 1 : lo - 1 + len(q.value)]
            acc = out.setdefault(q.distance, {"first": 0.0, "all": 0.0, "queries": 0})
            acc["first"] += float(got[0] == want[0])
            acc["all"] += float(np.array_equal(got, want))
            acc["queries"] += 1
    for acc in out.values():
        acc["first"] /= max(acc["queries"], 1)
        acc["all"] /= max(acc["queries"], 1)
    return out


def levels(rows: Sequence[ProbeRow]) -> dict[int, dict[str, float]]:
    """Per distance, the reference levels: ``chance_first`` 1/26, ``chance_all`` (1/26)^VALUE_LEN,
    ``guess_first`` / ``guess_all`` (a uniform guess among the values the row defined)."""
    out: dict[int, dict[str, float]] = {}
    for row in rows:
        for q in row.queries:
            acc = out.setdefault(q.distance, {"guess_first": 0.0, "guess_all": 0.0, "n": 0})
            acc["guess_first"] += q.guess_first
            acc["guess_all"] += q.guess_all
            acc["n"] += 1
    return {
        d: {
            "chance_first": 1 / len(ALPHABET),
            "chance_all": (1 / len(ALPHABET)) ** VALUE_LEN,
            "guess_first": a["guess_first"] / a["n"],
            "guess_all": a["guess_all"] / a["n"],
        }
        for d, a in out.items()
    }
