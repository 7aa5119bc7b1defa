"""Numerical constants shared by the ops (one definition each)."""

from __future__ import annotations

PHI = (1 + 5**0.5) / 2  # the golden ratio φ ≈ 1.618: phi offsets, satellite frequencies, Clifford grace scales
