import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spiraljax.ops import rhythm
from spiraljax.ops.spiral import make_offsets, phi_offsets, powers_of_two, shift_time, spiral_attention, spiral_mask


def test_mask_matches_definition_and_is_causal():
    for n in (1, 2, 5, 17):
        m = np.asarray(spiral_mask(n))
        for i in range(n):
            for j in range(n):
                want = j <= i and (i == j or (i - j) & (i - j - 1) == 0)
                assert m[i, j] == want, (n, i, j)
        assert not np.triu(m, 1).any()
        assert m.sum(1).max() <= int(np.log2(max(n - 1, 1))) + 2


def test_offset_patterns():
    assert powers_of_two(9) == [0, 1, 2, 4, 8]
    assert phi_offsets(20) == [0, 1, 2, 3, 4, 7, 11, 18]
    assert make_offsets(16, "none", n_back=(3,), every=5, every_count=2) == (0, 3, 5, 10)
    assert make_offsets(8, bidirectional=True) == (-4, -2, -1, 0, 1, 2, 4)
    with pytest.raises(ValueError, match="unknown spiral pattern"):
        make_offsets(8, "zigzag")


def test_shift_time():
    x = jnp.arange(5)[None, :, None]
    assert shift_time(x, 2)[0, :, 0].tolist() == [0, 0, 0, 1, 2]
    assert shift_time(x, -1)[0, :, 0].tolist() == [1, 2, 3, 4, 0]


def qkv(b=2, t=37, h=2, d=8, seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    return tuple(jax.random.normal(k, (b, t, h, d)) for k in ks)


@pytest.mark.parametrize(
    "offsets", [None, make_offsets(37, "phi", n_back=(5,)), make_offsets(37, every=6, every_count=3)]
)
@pytest.mark.parametrize("with_mask", [False, True])
def test_sparse_equals_dense_with_gradients(offsets, with_mask):
    q, k, v = qkv()
    key_mask = jax.random.bernoulli(jax.random.key(3), 0.6, (2, 37)) if with_mask else None

    def loss(impl, q, k, v):
        out = spiral_attention(q, k, v, offsets=offsets, key_mask=key_mask, impl=impl)
        return jnp.sum(out * jnp.cos(out)), out

    (ls, os_), gs = jax.value_and_grad(lambda *a: loss("sparse", *a), argnums=(0, 1, 2), has_aux=True)(q, k, v)
    (ld, od), gd = jax.value_and_grad(lambda *a: loss("dense", *a), argnums=(0, 1, 2), has_aux=True)(q, k, v)
    np.testing.assert_allclose(os_, od, atol=1e-5)
    for a, b in zip(gs, gd):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_bidirectional_and_empty_rows_are_finite():
    q, k, v = qkv(t=12)
    offs = make_offsets(12, bidirectional=True)
    np.testing.assert_allclose(
        spiral_attention(q, k, v, offsets=offs), spiral_attention(q, k, v, offsets=offs, impl="dense"), atol=1e-5
    )
    none = jnp.zeros((2, 12), bool)
    for impl in ("sparse", "dense"):
        out = spiral_attention(q, k, v, key_mask=none, keep_diagonal=False, impl=impl)
        assert np.isfinite(out).all() and float(jnp.abs(out).max()) == 0.0
        kept = spiral_attention(q, k, v, key_mask=none, impl=impl)  # diagonal only → output = v
        np.testing.assert_allclose(kept, v, atol=1e-6)


def test_sparse_is_causal():
    q, k, v = qkv(t=20)
    base = spiral_attention(q, k, v)
    k2, v2 = k.at[:, 11:].add(3.0), v.at[:, 11:].add(3.0)
    out = spiral_attention(q, k2, v2)
    np.testing.assert_allclose(out[:, :11], base[:, :11], atol=1e-6)
    assert not np.allclose(out[:, 11:], base[:, 11:])


def test_breath_clock_matches_duration_table():
    phases = np.asarray(rhythm.sequence_phases(24))
    expected = ([0] * 4 + [1] * 2 + [2] * 4 + [3] * 2) * 2
    assert phases.tolist() == expected
    assert np.asarray(rhythm.phase_weight(jnp.arange(12))).tolist() == [1.0] * 4 + [0.5] * 2 + [0.25] * 4 + [0.0] * 2
    assert int(rhythm.phase(12 * 1000 + 5)) == rhythm.HOLD  # pure function of the counter
    assert np.asarray(rhythm.sequence_phases(3, offset=10)).tolist() == [3, 3, 0]
    custom = rhythm.sequence_phases(6, durations=(1, 1, 1, 3))
    assert np.asarray(custom).tolist() == [0, 1, 2, 3, 3, 3]


def test_rhythm_options():
    ph = rhythm.sequence_phases(12)
    assert np.asarray(rhythm.attention_open(ph, (rhythm.INHALE,))).sum() == 4
    assert np.asarray(rhythm.recurrence_tick(jnp.arange(9), 4)).tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 1]
    rates = rhythm.dropout_rate(ph, (0.0, 0.0, 0.5, 0.0))
    x = jnp.ones((1, 12, 1000))
    y = rhythm.phase_dropout(x, rates[None], jax.random.key(0))
    assert float(jnp.mean(y[0, :4] == 1.0)) == 1.0  # inhale: no dropout
    assert 0.4 < float(jnp.mean(y[0, 6:10] == 0.0)) < 0.6  # exhale: ≈ 50 %
    w = rhythm.rhythmic_token_weights(
        jnp.array([[0, 5, 5, 0]]), jnp.array([1.0, 1.0, 0.0, 0.5]), jnp.array([0]), active_boost=2.0
    )
    assert np.asarray(w).tolist() == [[1.0, 2.0, 0.0, 0.5]]


@pytest.mark.parametrize("impl", ["sparse", "dense"])
@pytest.mark.parametrize("with_mask", [False, True])
def test_queries_after_a_cache_equal_the_last_rows_of_the_full_sequence(impl, with_mask):
    """Keys [B, S] with the queries as the last T positions (a cache of S − T keys in front) give the last T
    rows of the whole S-long attention, with the offsets of S."""
    q, k, v = qkv(t=29)
    key_mask = jax.random.bernoulli(jax.random.key(4), 0.7, (2, 29)) if with_mask else None
    offsets = make_offsets(29, n_back=(3,))
    full = spiral_attention(q, k, v, offsets=offsets, key_mask=key_mask, impl=impl)
    for p in (1, 13, 28):
        part = spiral_attention(q[:, p:], k, v, offsets=offsets, key_mask=key_mask, impl=impl)
        np.testing.assert_allclose(part, full[:, p:], atol=1e-5)


@pytest.mark.parametrize("with_mask", [False, True])
def test_sparse_equals_dense_with_a_cache_with_gradients(with_mask):
    q, _, _ = qkv(t=11, seed=1)
    _, k, v = qkv(t=30, seed=2)
    key_mask = jax.random.bernoulli(jax.random.key(5), 0.6, (2, 30)) if with_mask else None
    offsets = make_offsets(30, every=7, every_count=2)

    def run(impl):
        f = lambda q, k, v: spiral_attention(q, k, v, offsets=offsets, key_mask=key_mask, impl=impl)  # noqa: E731
        return f(q, k, v), jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a))), argnums=(0, 1, 2))(q, k, v)

    (os_, gs), (od, gd) = run("sparse"), run("dense")
    np.testing.assert_allclose(os_, od, atol=1e-5)
    for a, b in zip(gs, gd):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_mask_with_a_cache_matches_definition():
    m = np.asarray(spiral_mask(3, None, 9))  # queries at positions 6, 7, 8 of 9 keys; offsets of 9
    for i in range(3):
        for j in range(9):
            d = 6 + i - j
            assert m[i, j] == (d in (0, 1, 2, 4, 8)), (i, j)
    np.testing.assert_array_equal(spiral_mask(7, None, 7), spiral_mask(7))
