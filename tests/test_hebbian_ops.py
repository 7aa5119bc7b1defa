import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spiraljax.ops.hebbian import fast_weights
from spiraljax.ops.impl import resolve


def inputs(t=50, b=2, h=3, d=4, seed=0):
    ks = jax.random.split(jax.random.key(seed), 4)
    q, k, v = (jax.random.normal(kk, (b, t, h, d)) for kk in ks[:3])
    return q, k, v, ks[3]


@pytest.mark.parametrize("chunk", [1, 7, 16, 25, 64])  # 1 and 25 divide T = 50: one shared decay table
@pytest.mark.parametrize("decay", ["head", "step"])
def test_chunked_equals_scan_with_gradients(chunk, decay):
    q, k, v, key = inputs()
    if decay == "head":  # a per-head constant, fast forgetting (α = 0.1) included
        g = jnp.log(jnp.array([0.1, 0.5, 0.999]))
    else:  # per-step values
        g = -jax.nn.softplus(jax.random.normal(key, (2, 50, 3)))

    def loss(impl, q, k, v, g):
        o, s = fast_weights(q, k, v, g, impl=impl, chunk=chunk)
        return jnp.sum(jnp.sin(o)) + jnp.sum(s**2) * 1e-2, (o, s)

    grad = lambda impl: jax.grad(loss, argnums=(1, 2, 3, 4), has_aux=True)(impl, q, k, v, g)  # noqa: E731
    (gs, (os_, ss)), (gc, (oc, sc)) = grad("scan"), grad("chunked")
    np.testing.assert_allclose(oc, os_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sc, ss, rtol=1e-4, atol=1e-4)
    for a, b in zip(gc, gs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


# per-head decay, C | T = 48: the hand-written backward (1: a chunk per step, 64 > T: one chunk);
# 5 ∤ T and per-step decays: the JAX-differentiated general variant
@pytest.mark.parametrize(
    "chunk, decay, variant",
    [
        (1, "head", "chunked_per_head"),
        (16, "head", "chunked_per_head"),
        (64, "head", "chunked_per_head"),
        (5, "head", "chunked_general"),
        (16, "step", "chunked_general"),
    ],
)
def test_chunked_equals_scan_in_float64(chunk, decay, variant):
    """Values, final state and every gradient (q, k, v, the log decay, the initial state) to ~1e-12."""
    with jax.enable_x64(True):
        q, k, v, key = (x.astype(jnp.float64) if i < 3 else x for i, x in enumerate(inputs(t=48)))
        s0 = jax.random.normal(key, (2, 3, 4, 4), jnp.float64)
        g = (
            jnp.log(jnp.array([0.1, 0.7, 0.999], jnp.float64))
            if decay == "head"
            else -jax.nn.softplus(jax.random.normal(key, (2, 48, 3), jnp.float64))
        )
        assert resolve("fast_weights", "chunked", length=48, chunk=chunk, per_head_decay=decay == "head") == variant

        def loss(impl, *a):
            o, s = fast_weights(*a[:4], initial_state=a[4], impl=impl, chunk=chunk)
            return jnp.sum(jnp.sin(o)) + 0.1 * jnp.sum(jnp.cos(s)), (o, s)

        (gs, (os_, ss)), (gc, (oc, sc)) = (
            jax.jit(jax.grad(loss, argnums=(1, 2, 3, 4, 5), has_aux=True), static_argnums=0)(impl, q, k, v, g, s0)
            for impl in ("scan", "chunked")
        )
        assert oc.dtype == jnp.float64 and gc[0].dtype == jnp.float64
        np.testing.assert_allclose(oc, os_, rtol=0, atol=1e-12)
        np.testing.assert_allclose(sc, ss, rtol=0, atol=1e-12)
        for a, b in zip(gc, gs):  # the decay's gradient reaches ~5e3 (λ 0.999): relative 1e-13 there
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-11)


def test_hand_written_backward_with_initial_state_equals_scan():
    """The per-head-constant path has its own VJP: gradients for q, k, v, the decay and the initial
    state (generation continues from it) all match autodiff through the scan."""
    q, k, v, key = inputs(t=48)
    g = jnp.log(jnp.array([0.3, 0.9, 0.999]))
    s0 = jax.random.normal(key, (2, 3, 4, 4))

    def loss(impl, *args):
        o, s = fast_weights(*args[:4], initial_state=args[4], impl=impl, chunk=16)
        return jnp.sum(jnp.sin(o)) + 0.1 * jnp.sum(jnp.cos(s))

    grads = [jax.grad(loss, argnums=(1, 2, 3, 4, 5))(impl, q, k, v, g, s0) for impl in ("scan", "chunked")]
    for a, b in zip(*grads):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def test_state_carry_two_halves_equals_one_pass():
    q, k, v, _ = inputs(t=40)
    g = jnp.log(jnp.array([0.9, 0.5, 0.99]))
    full, s_full = fast_weights(q, k, v, g, chunk=8)
    a, s_a = fast_weights(q[:, :17], k[:, :17], v[:, :17], g, chunk=8)
    b, s_b = fast_weights(q[:, 17:], k[:, 17:], v[:, 17:], g, initial_state=s_a, chunk=8)
    np.testing.assert_allclose(jnp.concatenate([a, b], 1), full, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s_b, s_full, rtol=1e-4, atol=1e-5)


def test_fast_forgetting_really_forgets_far_past():
    """α = 0.1: a key written 100 steps ago contributes ~0.1^100 — not a uniform average (original bug)."""
    t = 120
    q = jnp.ones((1, t, 1, 1))
    k = jnp.zeros((1, t, 1, 1)).at[0, 0].set(1.0)
    v = jnp.ones((1, t, 1, 1))
    o, _ = fast_weights(q, k, v, jnp.log(0.1), chunk=32)
    assert float(o[0, 0, 0, 0]) == pytest.approx(1.0)
    assert float(o[0, 100, 0, 0]) < 1e-30
    assert np.isfinite(np.asarray(o)).all()


def test_causal_and_unknown_impl():
    q, k, v, _ = inputs(t=20)
    base, _ = fast_weights(q, k, v, -0.1)
    out, _ = fast_weights(q, k.at[:, 10:].add(1.0), v.at[:, 10:].add(1.0), -0.1)
    np.testing.assert_allclose(out[:, :10], base[:, :10], atol=1e-6)
    with pytest.raises(ValueError, match="unknown fast_weights impl"):
        fast_weights(q, k, v, -0.1, impl="magic")
