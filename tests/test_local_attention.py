"""Local (sliding-window) attention: the blocked O(S·w) fast path equals the dense masked reference in
values and gradients (any window, any length, with a cache of earlier keys in front), builds no S×S
array, is causal, and ``impl`` resolves as spiraljax.ops.impl says."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spiraljax.ops.attention import causal_attention, causal_mask, local_attention, local_attention_blocked
from spiraljax.ops.impl import LOCAL_DENSE_BELOW, Impl, resolve


def qkv(t, s=None, b=2, h=2, d=4, seed=0):
    s = t if s is None else s
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    return jax.random.normal(kq, (b, t, h, d)), jax.random.normal(kk, (b, s, h, d)), jax.random.normal(kv, (b, s, h, d))


def values_and_grads(fn, q, k, v):
    loss = lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))  # noqa: E731
    return fn(q, k, v), jax.grad(loss, argnums=(0, 1, 2))(q, k, v)


# (T queries, S keys, window, block): w ≥ T, w = 1, T not a multiple of w, a cache (S > T), larger blocks
CASES = [
    (12, 12, 3, None),
    (12, 12, 1, None),
    (12, 12, 12, None),
    (12, 12, 40, None),
    (13, 13, 5, None),
    (7, 10, 4, None),
    (5, 13, 6, None),
    (16, 16, 4, 8),
    (11, 11, 3, 5),
]


@pytest.mark.parametrize("t, s, w, block", CASES)
@pytest.mark.parametrize("with_valid", [False, True])
def test_blocked_equals_dense_reference_with_gradients(t, s, w, block, with_valid):
    q, k, v = qkv(t, s, seed=t + s + w)
    valid = None
    if with_valid:  # some cache slots empty; the window's own keys always exist
        valid = jax.random.bernoulli(jax.random.key(9), 0.6, (2, s)).at[:, s - t :].set(True)
    fast, g_fast = values_and_grads(lambda *a: local_attention_blocked(*a, w, key_valid=valid, block=block), q, k, v)
    ref, g_ref = values_and_grads(lambda *a: causal_attention(*a, w, key_valid=valid), q, k, v)
    np.testing.assert_allclose(fast, ref, atol=1e-5)
    for a, b in zip(g_fast, g_ref):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_reference_matches_the_definition_with_a_cache():
    """Query i (position P + i) sees keys P + i − w + 1 … P + i that are valid: loop over the formula."""
    t, s, w = 5, 9, 3
    q, k, v = qkv(t, s, b=1, h=1)
    valid = jnp.array([[False, True, True, True, False, True, True, True, True]])
    out = np.asarray(causal_attention(q, k, v, w, key_valid=valid))
    qn, kn, vn, ok = map(np.asarray, (q, k, v, valid))
    for i in range(t):
        js = [j for j in range(s - t + i - w + 1, s - t + i + 1) if j >= 0 and ok[0, j]]
        sc = kn[0, js, 0] @ qn[0, i, 0] / 2.0
        p = np.exp(sc - sc.max())
        np.testing.assert_allclose(out[0, i, 0], (p / p.sum()) @ vn[0, js, 0], atol=1e-5)


def test_causal_mask_keeps_its_meaning_without_a_cache():
    np.testing.assert_array_equal(causal_mask(6, 2, 6), causal_mask(6, 2))
    np.testing.assert_array_equal(causal_mask(3, None, 5)[0], [True, True, True, False, False])


def test_blocked_builds_no_s_by_s_array():
    """Every intermediate of the blocked forward+backward is far smaller than S² (the dense path has S²)."""
    s, w = 256, 4
    q, k, v = qkv(s, b=1, h=1, d=2)

    def biggest(fn):
        jaxpr = jax.make_jaxpr(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v)), argnums=(0, 1, 2)))(q, k, v)
        sizes = [int(np.prod(var.aval.shape)) for eq in jaxpr.jaxpr.eqns for var in eq.outvars]
        return max(sizes)

    assert biggest(lambda *a: local_attention_blocked(*a, w)) <= 4 * s * w
    assert biggest(lambda *a: causal_attention(*a, w)) >= s * s  # the check can fail


@pytest.mark.parametrize("impl", ["blocked", "dense", "auto"])
def test_future_keys_never_change_past_outputs(impl):
    q, k, v = qkv(300)
    base = local_attention(q, k, v, 9, impl=impl)
    k2, v2 = k.at[:, 150:].add(3.0), v.at[:, 150:].add(3.0)
    out = local_attention(q, k2, v2, 9, impl=impl)
    np.testing.assert_allclose(out[:, :150], base[:, :150], atol=1e-6)
    assert not np.allclose(out[:, 150:], base[:, 150:])


def test_auto_rule_and_dispatch():
    below = LOCAL_DENSE_BELOW["cpu"]
    assert resolve("local_attention", "auto", platform="cpu", length=below - 1, window=3) is Impl.DENSE
    assert resolve("local_attention", "auto", platform="cpu", length=4096, window=13) is Impl.BLOCKED
    assert resolve("local_attention", "auto", platform="cpu", length=4096, window=2048) is Impl.DENSE  # wide window
    assert resolve("local_attention", "auto", platform="cpu") is Impl.BLOCKED  # the table row
    assert resolve("local_attention", "dense", platform="cpu", length=4096, window=13) is Impl.DENSE
    with pytest.raises(ValueError, match=r"unknown local_attention impl 'sparse' \(auto \| blocked \| dense\)"):
        resolve("local_attention", "sparse")
    q, k, v = qkv(below + 3)
    np.testing.assert_array_equal(local_attention(q, k, v, 5), local_attention_blocked(q, k, v, 5))
    np.testing.assert_array_equal(local_attention(q, k, v, 5, impl="dense"), causal_attention(q, k, v, 5))


def test_bad_window_and_short_keys_are_one_line_errors():
    q, k, v = qkv(8)
    with pytest.raises(ValueError, match="window must be >= 1"):
        local_attention_blocked(q, k, v, 0)
    with pytest.raises(AssertionError, match=r"keys \(2, 6, 2, 4\) are fewer than the queries"):
        causal_attention(q, k[:, :6], v[:, :6])
