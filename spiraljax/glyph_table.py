"""The static 64-glyph contemplative vocabulary: id 0 = ``<PAD>`` (silence), then 4 categories × 16.

Each glyph has a symbol string, a category and a short meaning. Only the table (ids, symbols,
categories): the codec with its errors is :mod:`spiraljax.data.glyphs`. It sits outside ``data/`` and
``models/`` because both use it (the Spiralformer's silence gate reads ``SILENCE_IDS``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD = "<PAD>"
PAD_ID = 0
CATEGORIES = ("NETWORK", "ENERGY", "HEALTH", "SILENCE")


@dataclass(frozen=True)
class Glyph:
    id: int
    symbol: str
    category: str
    meaning: str


_TABLE: dict[str, list[tuple[str, str]]] = {
    "NETWORK": [
        ("🌐ping", "probe a neighbour"),
        ("📡relay", "forward through another path"),
        ("🔗link", "restore a link"),
        ("⛓️bond", "bind two nodes"),
        ("🕸️mesh", "re-weave the mesh"),
        ("📶boost", "raise signal strength"),
        ("🔀route", "reroute traffic"),
        ("🧭seek", "search for a path"),
        ("⏳wait", "let latency settle"),
        ("🔁retry", "retry gently"),
        ("📦buffer", "buffer packets"),
        ("🚦throttle", "slow the flow"),
        ("🛰️sync", "resynchronise clocks"),
        ("🌉bridge", "bridge partitions"),
        ("📨ack", "acknowledge"),
        ("🌀spiral", "spread outward in hops"),
    ],
    "ENERGY": [
        ("☀️pwr", "draw solar power"),
        ("🔋store", "store energy"),
        ("⚡surge", "absorb a surge"),
        ("🪫low", "conserve a low battery"),
        ("🌙rest", "enter low-power rest"),
        ("🔌plug", "connect supply"),
        ("💡dim", "dim non-essential load"),
        ("🌬️wind", "draw wind power"),
        ("🔥heat", "shed heat"),
        ("❄️cool", "cool down"),
        ("⚖️balance", "balance the load"),
        ("🌊tide", "follow the supply tide"),
        ("🕯️glow", "keep a minimal glow"),
        ("♻️reuse", "recycle energy"),
        ("🌤️wake", "wake with the sun"),
        ("🪨ground", "ground the circuit"),
    ],
    "HEALTH": [
        ("💧08", "hydrate: moisture 8"),
        ("💧04", "hydrate: moisture 4"),
        ("🌲44", "forest vitality 44"),
        ("🌲12", "forest vitality 12"),
        ("🌱regen", "regenerate"),
        ("🍄spore", "release spores"),
        ("🩹mend", "mend damage"),
        ("🧪test", "test the substrate"),
        ("🌡️temp", "check temperature"),
        ("🍂shed", "shed what is spent"),
        ("🌿grow", "grow slowly"),
        ("🧬repair", "repair the pattern"),
        ("🪴tend", "tend the root"),
        ("🫧clean", "clean the channel"),
        ("🩺listen", "listen to symptoms"),
        ("🌾harvest", "harvest surplus"),
    ],
    "SILENCE": [
        ("…", "contemplative pause"),
        ("🤫hush", "hush"),
        ("🌫️mist", "soft unknowing"),
        ("🕊️peace", "peace"),
        ("🌌void", "spacious emptiness"),
        ("🌑new", "new moon stillness"),
        ("🪷lotus", "rest in awareness"),
        ("🫥fade", "fade out"),
        ("⭕empty", "the empty circle"),
        ("〰️breath", "one breath"),
        ("🌙still", "night stillness"),
        ("🍃drift", "drift"),
        ("💤sleep", "sleep"),
        ("🔇mute", "mute"),
        ("🧘sit", "sit with it"),
        ("✨wonder", "wonder"),
    ],
}

GLYPHS: tuple[Glyph, ...] = (Glyph(PAD_ID, PAD, "SILENCE", "padding / silence"),) + tuple(
    Glyph(1 + 16 * c + i, sym, cat, meaning)
    for c, cat in enumerate(CATEGORIES)
    for i, (sym, meaning) in enumerate(_TABLE[cat])
)
VOCAB_SIZE = len(GLYPHS)  # 65
SYMBOL_TO_ID = {g.symbol: g.id for g in GLYPHS}
SILENCE_ID = SYMBOL_TO_ID["…"]
CATEGORY_OF = np.array([CATEGORIES.index(g.category) for g in GLYPHS], np.int32)
SILENCE_IDS = np.array([g.id for g in GLYPHS if g.category == "SILENCE"], np.int32)  # PAD included


def ids_of(category: str) -> list[int]:
    return [g.id for g in GLYPHS if g.category == category and g.id != PAD_ID]
