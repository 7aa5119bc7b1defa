"""The fast masked softmax (spiraljax.ops.attention.masked_softmax) equals its reference
(masked_softmax_reference) in values and gradients, fully masked rows included (zeros, never NaN), and
the attention ops that use it equal attention written with the reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spiraljax.ops.attention import (
    causal_attention,
    causal_mask,
    masked_attention,
    masked_softmax,
    masked_softmax_reference,
)
from spiraljax.ops.spiral import make_offsets, spiral_attention, spiral_mask


def normal(seed, shape, scale=3.0):
    return scale * jax.random.normal(jax.random.key(seed), shape)


def masks():
    t = 9
    rand = jax.random.bernoulli(jax.random.key(5), 0.4, (2, 1, t, t))
    return {
        "causal": causal_mask(t),
        "window": causal_mask(t, 3),
        "random, some rows empty": rand.at[:, :, 2].set(False),
        "all empty": jnp.zeros((t, t), bool),
        "one row only": jnp.zeros((t, t), bool).at[4, :].set(True),
    }


@pytest.mark.parametrize("name", list(masks()))
def test_values_and_gradients_equal_the_reference(name):
    mask = masks()[name]
    s = normal(0, (2, 3, 9, 9))
    cot = normal(1, (2, 3, 9, 9), 1.0)
    loss = lambda f: lambda s: jnp.sum(f(s, mask) * cot)  # noqa: E731
    fast, ref = masked_softmax(s, mask), masked_softmax_reference(s, mask)
    np.testing.assert_allclose(fast, ref, rtol=1e-6, atol=1e-7)
    g_fast, g_ref = jax.grad(loss(masked_softmax))(s), jax.grad(loss(masked_softmax_reference))(s)
    assert np.isfinite(g_fast).all() and np.isfinite(fast).all()
    np.testing.assert_allclose(g_fast, g_ref, rtol=1e-5, atol=1e-6)
    empty = ~np.asarray(jnp.broadcast_to(mask, s.shape)).any(-1)
    assert float(jnp.abs(jnp.where(empty[..., None], fast, 0.0)).max()) == 0.0  # empty rows: zeros
    assert float(jnp.abs(jnp.where(empty[..., None], g_fast, 0.0)).max()) == 0.0  # and no gradient
    np.testing.assert_array_equal(jnp.where(mask, 0.0, fast), 0.0)  # masked entries: 0


def test_no_empty_rows_flag_is_exact_when_every_row_has_a_key():
    s, mask = normal(2, (2, 4, 16, 16)), causal_mask(16)
    np.testing.assert_array_equal(masked_softmax(s, mask, empty_rows=False), masked_softmax(s, mask))


def test_large_scores_stay_exact():
    s = normal(3, (1, 1, 8, 8), 1e4)  # far beyond any real logit
    mask = causal_mask(8)
    np.testing.assert_allclose(masked_softmax(s, mask), masked_softmax_reference(s, mask), rtol=1e-6, atol=1e-7)


def attention_with_reference(q, k, v, mask):
    scores = jnp.einsum("bthd,bshd->bhts", q, k) * q.shape[-1] ** -0.5
    return jnp.einsum("bhts,bshd->bthd", masked_softmax_reference(scores, mask), v)


@pytest.mark.parametrize("window", [None, 4])
def test_causal_attention_equals_the_reference_with_gradients(window):
    q, k, v = (normal(i, (2, 13, 2, 8), 1.0) for i in range(3))
    mask = causal_mask(13, window)

    def grads(f):
        return jax.value_and_grad(lambda *a: jnp.sum(jnp.sin(f(*a))), argnums=(0, 1, 2))(q, k, v)

    (lf, gf), (lr, gr) = (
        grads(lambda *a: causal_attention(*a, window=window)),
        grads(lambda *a: attention_with_reference(*a, mask)),
    )
    np.testing.assert_allclose(lf, lr, rtol=1e-5)
    for a, b in zip(gf, gr):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["sparse", "dense"])
@pytest.mark.parametrize("keep_diagonal", [True, False])
def test_spiral_attention_equals_the_reference_including_empty_rows(impl, keep_diagonal):
    q, k, v = (normal(i, (2, 12, 2, 8), 1.0) for i in range(3))
    key_mask = jax.random.bernoulli(jax.random.key(9), 0.5, (2, 12)).at[0].set(False)  # sequence 0: no keys
    offsets = make_offsets(12, n_back=(5,))
    mask = spiral_mask(12, offsets)[None, None] & (
        key_mask[:, None, None, :] | (jnp.eye(12, dtype=bool) if keep_diagonal else False)
    )
    out = spiral_attention(q, k, v, offsets=offsets, key_mask=key_mask, impl=impl, keep_diagonal=keep_diagonal)
    np.testing.assert_allclose(out, attention_with_reference(q, k, v, mask), atol=1e-5)
    assert np.isfinite(
        jax.grad(
            lambda q: jnp.sum(
                spiral_attention(q, k, v, offsets=offsets, key_mask=key_mask, impl=impl, keep_diagonal=keep_diagonal)
                ** 2
            )
        )(q)
    ).all()


def test_masked_attention_rows_without_keys_are_zero_with_finite_gradients():
    q, k, v = (normal(i, (1, 5, 1, 4), 1.0) for i in range(3))
    mask = jnp.zeros((5, 5), bool).at[2, :2].set(True)
    out = masked_attention(q, k, v, mask)
    np.testing.assert_array_equal(np.delete(np.asarray(out), 2, axis=1), 0.0)
    np.testing.assert_allclose(out, attention_with_reference(q, k, v, mask), atol=1e-6)
    g = jax.grad(lambda q, k: jnp.sum(masked_attention(q, k, v, mask)), argnums=(0, 1))(q, k)
    assert all(np.isfinite(x).all() for x in g)
