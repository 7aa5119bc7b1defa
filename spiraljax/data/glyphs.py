"""The codec of the 64-glyph contemplative vocabulary: ``encode``/``decode`` round-trip; an unknown
symbol raises :class:`GlyphError` naming the symbol (and the record, if given). The table itself (ids,
symbols, categories) is :mod:`spiraljax.glyph_table`, re-exported here.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from spiraljax.data.base import DataError
from spiraljax.glyph_table import GLYPHS, PAD_ID, SILENCE_IDS, SYMBOL_TO_ID, VOCAB_SIZE
from spiraljax.glyph_table import CATEGORIES, CATEGORY_OF, PAD, SILENCE_ID, Glyph, ids_of  # noqa: F401 (re-exported)


class GlyphError(DataError):
    """Unknown glyph symbol or id (a DataError: the CLIs print it as one line)."""


def encode(symbols: Iterable[str], record: str | int | None = None) -> np.ndarray:
    """Symbols → ids; an unknown symbol raises a one-line GlyphError naming it (and the record)."""
    out = []
    for pos, s in enumerate(symbols):
        if s not in SYMBOL_TO_ID:
            where = f" in record {record}" if record is not None else ""
            raise GlyphError(f"unknown glyph {s!r}{where} at position {pos}")
        out.append(SYMBOL_TO_ID[s])
    return np.asarray(out, np.int32)


def decode(ids: Sequence[int] | np.ndarray, strip_pad: bool = False) -> list[str]:
    out = []
    for i in np.asarray(ids).ravel().tolist():
        if not 0 <= i < VOCAB_SIZE:
            raise GlyphError(f"glyph id {i} is outside 0..{VOCAB_SIZE - 1}")
        if not (strip_pad and i == PAD_ID):
            out.append(GLYPHS[i].symbol)
    return out


def is_silence(ids) -> np.ndarray:
    return np.isin(np.asarray(ids), SILENCE_IDS)
