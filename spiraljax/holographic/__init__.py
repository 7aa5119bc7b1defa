"""Holographic associative memory in Cl(3,1): pure, jit-compiled functions over a state pytree.

Not a Flax model (``model.family: holographic`` has no ``build()``); evaluated by
``python evaluate.py --suite holographic``.

* :mod:`~spiraljax.holographic.store`: ``init``, ``learn`` — M[slot(ctx), lane] += φ⁻¹ · C(ctx) · E(target),
  with C the ordered product of the context's token embeddings, and the registry of bindings;
* :mod:`~spiraljax.holographic.read`: ``retrieve`` — scores_v = ⟨C⁻¹ (M + D), E(v)⟩, the own slot or a
  similarity read over the registry;
* :mod:`~spiraljax.holographic.dream`: ``dream`` — joint decoding of the stored answers (non-REM + REM),
  written back as the consolidation D;
* :mod:`~spiraljax.holographic.sampling`: ``generate`` — sampling by repeated retrieval.
"""

from __future__ import annotations

from spiraljax.holographic.config import HolographicConfig
from spiraljax.holographic.dream import MAX_DREAM_ITERS, decode, dream, noop_dream, stability
from spiraljax.holographic.read import (
    NEIGHBOURS,
    best_scores,
    registered,
    retrieve,
    retrieve_all,
    similarity,
    similarity_read,
    similarity_reference,
)
from spiraljax.holographic.sampling import generate
from spiraljax.holographic.store import SIMILARITY_POWER, State, init, learn, learn_reference, token_kernel

__all__ = [
    "HolographicConfig",
    "MAX_DREAM_ITERS",
    "NEIGHBOURS",
    "SIMILARITY_POWER",
    "State",
    "best_scores",
    "decode",
    "dream",
    "generate",
    "init",
    "learn",
    "learn_reference",
    "noop_dream",
    "registered",
    "retrieve",
    "retrieve_all",
    "similarity",
    "similarity_read",
    "similarity_reference",
    "stability",
    "token_kernel",
]
