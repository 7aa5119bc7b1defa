"""Flax Linen layers that hold parameters and call :mod:`spiraljax.ops`."""
