"""benchmarks/flops.py: FLOP accounting of compiled HLO (dots × loop trip counts) and the dominant shape."""
from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import flops  # noqa: E402


def _compiled(f, *args):
    return jax.jit(f).lower(*args).compile()


def test_scan_body_counted_by_trip_count_where_cost_analysis_counts_it_once():
    def f(x, w):
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=10)[0]

    c = _compiled(f, jnp.ones((64, 128)), jnp.ones((128, 128)))
    counts = flops.dot_flops(c.as_text())
    assert counts == {flops.DotShape(1, 64, 128, 128): 10}
    assert flops.total_dot_flops(counts) == 10 * 2 * 64 * 128 * 128
    assert flops.xla_flops(c) < 0.2 * flops.total_dot_flops(counts)  # why the dot count exists


def test_batched_dots_and_gradient_match_cost_analysis():
    def loss(x, w):
        return jnp.sum(jnp.einsum("bij,bjk->bik", x, w) ** 2)

    c = _compiled(jax.grad(loss, argnums=(0, 1)), jnp.ones((4, 64, 32)), jnp.ones((4, 32, 16)))
    counts = flops.dot_flops(c.as_text())
    # forward [64,32]@[32,16] and the two gradients (their operand orders are XLA's): 3 products of 2·4·64·32·16
    assert all(s.batch == 4 and s.m * s.k * s.n == 64 * 32 * 16 for s in counts)
    assert flops.total_dot_flops(counts) == 3 * 2 * 4 * 64 * 32 * 16
    assert flops.total_dot_flops(counts) == pytest.approx(flops.xla_flops(c), rel=0.05)


def test_dominant_dot_weights_shape_by_executions():
    big, small = flops.DotShape(1, 64, 64, 64), flops.DotShape(2, 8, 8, 8)
    assert flops.dominant_dot({big: 1, small: 1}) == big
    assert flops.dominant_dot({big: 1, small: 1000}) == small
    assert str(small) == "2×[8,8]@[8,8]" and small.flops == 2 * 2 * 8 * 8 * 8


def test_matmul_rate_is_positive():
    assert flops.matmul_rate(flops.DotShape(1, 32, 32, 32), repeats=2) > 0


def test_unparseable_text_is_an_error():
    with pytest.raises(ValueError, match="ENTRY"):
        flops.dot_flops("not hlo")
