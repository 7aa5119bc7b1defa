"""Public-op contracts: RoPE's algebra, and the chex shape checks at op boundaries (which fire on a bad
shape, name it, and add nothing to the traced computation)."""

from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spiraljax.ops import clifford, hebbian, kuramoto, soma, toroidal, tower
from spiraljax.ops.attention import apply_rope, causal_attention, masked_attention
from spiraljax.ops.spiral import spiral_attention


def normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape)


# ---------------------------------------------------------------- RoPE


def test_rope_at_position_zero_is_the_identity_and_elsewhere_is_not():
    x = normal(0, (2, 5, 3, 8))
    np.testing.assert_array_equal(apply_rope(x, jnp.zeros(5, jnp.int32)), x)
    moved = apply_rope(x, jnp.arange(5))
    np.testing.assert_array_equal(moved[:, 0], x[:, 0])  # position 0 of arange
    assert not np.allclose(moved[:, 1:], x[:, 1:], atol=1e-3)  # the others rotate


def test_rope_matches_complex_rotation_per_frequency_pair():
    """Pair i = (x_i, x_{i+D/2}) is the complex number x_i + i·x_{i+D/2}, rotated by pos·base^(−2i/D)."""
    d, pos = 8, np.array([0, 1, 3, 17])
    x = np.asarray(normal(1, (1, 4, d)), np.float64)
    z = x[..., : d // 2] + 1j * x[..., d // 2 :]
    ref = z * np.exp(1j * pos[:, None] * 10000.0 ** (-np.arange(0, d, 2) / d))
    out = np.asarray(apply_rope(jnp.asarray(x, jnp.float32), jnp.asarray(pos)))
    np.testing.assert_allclose(out, np.concatenate([ref.real, ref.imag], -1), atol=1e-5)


def test_rope_preserves_norms_and_dtype():
    x = normal(2, (2, 6, 2, 16)).astype(jnp.bfloat16)
    out = apply_rope(x, jnp.arange(6) * 37)
    assert out.dtype == jnp.bfloat16 and out.shape == x.shape
    x32 = x.astype(jnp.float32)
    out32 = apply_rope(x32, jnp.arange(6) * 37)
    np.testing.assert_allclose(jnp.linalg.norm(out32, axis=-1), jnp.linalg.norm(x32, axis=-1), rtol=1e-5)


def test_rope_3d_input_equals_4d_with_one_head():
    x = normal(3, (2, 7, 8))
    np.testing.assert_allclose(
        apply_rope(x, jnp.arange(7)), apply_rope(x[:, :, None], jnp.arange(7))[:, :, 0], atol=1e-6
    )


def _score(q: jax.Array, k: jax.Array, m: int, n: int) -> float:
    """⟨rope(q, m), rope(k, n)⟩ for single vectors q, k ``[D]``."""
    qm = apply_rope(q[None, None, None], jnp.array([m]))
    kn = apply_rope(k[None, None, None], jnp.array([n]))
    return float(jnp.sum(qm * kn))


@pytest.mark.parametrize("m, n", [(3, 1), (0, 5), (12, 12), (40, 9)])
def test_rope_score_depends_only_on_the_position_difference(m, n):
    q, k = normal(4, (16,)), normal(5, (16,))
    base = _score(q, k, m, n)
    for shift in (1, 7, 250):
        assert _score(q, k, m + shift, n + shift) == pytest.approx(base, abs=1e-4), shift
    assert abs(_score(q, k, m + 1, n) - base) > 1e-3  # the difference itself does matter


def test_rope_rejects_bad_shapes():
    with pytest.raises(AssertionError, match=re.escape("(5, 8)")):
        apply_rope(normal(0, (5, 8)), jnp.arange(5))  # rank 2
    with pytest.raises(AssertionError, match="rank"):
        apply_rope(normal(0, (1, 5, 8)), jnp.arange(5)[None])  # positions [1, T]
    with pytest.raises(AssertionError, match="'5'"):
        apply_rope(normal(0, (1, 4, 8)), jnp.arange(5))  # positions length ≠ T
    with pytest.raises(AssertionError):
        apply_rope(normal(0, (1, 4, 7)), jnp.arange(4))  # odd D


# ---------------------------------------------------------------- chex checks at op boundaries


def _bad_calls():
    q4 = normal(0, (2, 8, 2, 4))
    q3 = normal(0, (2, 8, 4))
    short = normal(1, (2, 6, 2, 4))
    om, coup, th0 = normal(2, (2, 5, 3)), jnp.ones((2, 5)), jnp.zeros((2, 3))
    tw = tower.tower_init(2, 3, 4)
    return {
        "spiral_rank": (lambda: spiral_attention(q3, q3, q3), "(2, 8, 4)"),
        "spiral_kv_length": (lambda: spiral_attention(q4, short, short), "(2, 6, 2, 4)"),
        "spiral_key_mask": (lambda: spiral_attention(q4, q4, q4, key_mask=jnp.ones((2, 7), bool)), "(2, 7)"),
        "causal_rank": (lambda: causal_attention(q3, q3, q3), "(2, 8, 4)"),
        "masked_rank": (lambda: masked_attention(q3, q3, q3, jnp.ones((8, 8), bool)), "(2, 8, 4)"),
        "fast_weights_rank": (lambda: hebbian.fast_weights(q3, q3, q3, -0.1), "(2, 8, 4)"),
        "fast_weights_state": (
            lambda: hebbian.fast_weights(q4, q4, q4, -0.1, initial_state=jnp.zeros((2, 2, 4))),
            "(2, 2, 4)",
        ),
        "kuramoto_scan_coupling": (lambda: kuramoto.kuramoto_scan(th0, om, jnp.ones((2, 5, 3)), 0.1), "(2, 5, 3)"),
        "kuramoto_scan_theta0": (lambda: kuramoto.kuramoto_scan(jnp.zeros((2, 4)), om, coup, 0.1), "(2, 4)"),
        "kuramoto_scan_rank": (lambda: kuramoto.kuramoto_scan(th0[:, 0], om[..., 0], coup, 0.1), "(2, 5)"),
        "kuramoto_step": (lambda: kuramoto.kuramoto_step(th0, om[:, 0], jnp.ones((2, 3)), 0.1), "(2, 3)"),
        "bistable_u": (lambda: kuramoto.bistable_u(jnp.ones((2, 9))), "'10'"),
        "global_R": (
            lambda: kuramoto.global_order_parameter(jnp.ones((2, 3, 2)), jnp.ones((2, 3, 2)), jnp.ones((2, 3, 1))),
            "(2, 3, 1)",
        ),
        "toroidal": (lambda: toroidal.toroidal_attention(jnp.ones((9, 4)), toroidal.satellite_phases(8)), "'9'"),
        "field_charge": (lambda: soma.field_charge(jnp.ones((3, 4))), "'5'"),
        "context_product": (lambda: clifford.context_product(jnp.ones((5, 3, 3)), jnp.array([[1, 2]])), "(5, 3, 3)"),
        "tower_write": (lambda: tower.tower_write(tw, jnp.ones((2, 5)), jnp.ones((2, 2))), "(2, 5)"),
        "tower_read_charge": (lambda: tower.tower_read(tw, jnp.ones((2,))), "(2,)"),
    }


@pytest.mark.parametrize("name", sorted(_bad_calls()))
def test_chex_assertion_fires_and_names_the_shape(name):
    call, shape = _bad_calls()[name]
    with pytest.raises(AssertionError, match=re.escape(shape)):
        call()


def test_assertions_fire_at_trace_time_under_jit():
    q3 = jnp.ones((2, 8, 4))
    with pytest.raises(AssertionError, match=re.escape("(2, 8, 4)")):
        jax.jit(lambda q: spiral_attention(q, q, q))(q3)
    om = jnp.ones((2, 5, 3))
    with pytest.raises(AssertionError, match=re.escape("(2, 5, 3)")):
        jax.jit(lambda c: kuramoto.kuramoto_scan(jnp.zeros((2, 3)), om, c, 0.1))(jnp.ones((2, 5, 3)))


def test_assertions_add_nothing_to_the_traced_computation():
    """The checks are static: the jaxpr with them equals the jaxpr with chex asserts disabled."""
    q = normal(0, (1, 8, 2, 4))
    om, coup, th0 = normal(1, (1, 6, 2, 3)), jnp.ones((1, 6, 2)), jnp.zeros((1, 2, 3))
    fns = [
        lambda: jax.make_jaxpr(lambda x: spiral_attention(apply_rope(x, jnp.arange(8)), x, x))(q),
        lambda: jax.make_jaxpr(lambda o: kuramoto.kuramoto_scan(th0, o, coup, 0.1))(om),
        lambda: jax.make_jaxpr(lambda x: hebbian.fast_weights(x, x, x, -0.1, chunk=4))(q),
    ]
    with_checks = [str(f()) for f in fns]
    chex.disable_asserts()
    try:
        without = [str(f()) for f in fns]
    finally:
        chex.enable_asserts()
    assert with_checks == without
