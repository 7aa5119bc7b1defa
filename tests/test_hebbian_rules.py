"""Fast-weight write rules at the op level: the delta rule's chunked WY/UT form and the shifted-key
memory against their per-position scans (values and gradients), state carry, causality, dispatch."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spiraljax.ops.delta import delta_rule, unit_lower_inverse
from spiraljax.ops.hebbian import fast_weights
from spiraljax.ops.impl import Impl, resolve
from spiraljax.ops.shifted import causal_key_conv, shifted_fast_weights


# jitted: eager dispatch of the chunked forms' many small ops costs far more than compiling them once
_delta = jax.jit(delta_rule, static_argnames=("impl", "chunk"))
_shifted = jax.jit(shifted_fast_weights, static_argnums=(5,), static_argnames=("impl", "chunk"))
_fast = jax.jit(fast_weights, static_argnames=("impl", "chunk"))


def _identity(x):
    return x


def _unit(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def delta_inputs(t=37, b=2, h=3, d=5, e=4, dtype=jnp.float32, seed=0):
    ks = jax.random.split(jax.random.key(seed), 6)
    q = _unit(jax.random.normal(ks[0], (b, t, h, d), dtype))
    k = _unit(jax.random.normal(ks[1], (b, t, h, d), dtype))
    v = jax.random.normal(ks[2], (b, t, h, e), dtype)
    beta = jax.nn.sigmoid(jax.random.normal(ks[3], (b, t, h), dtype))
    g_step = -jax.nn.softplus(jax.random.normal(ks[4], (b, t, h), dtype))
    s0 = jax.random.normal(ks[5], (b, h, d, e), dtype)
    return q, k, v, beta, g_step, s0


def _grads(fn, impl, chunk, args):
    """(outputs, final state), loss and the gradient of every argument, in one jitted call."""

    def loss(*a):
        o, s = fn(*a[:-1], initial_state=a[-1], impl=impl, chunk=chunk)
        return jnp.sum(jnp.sin(o)) + 0.1 * jnp.sum(jnp.cos(s)), (o, s)

    return jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(args))), has_aux=True))(*args)


def test_unit_lower_inverse_is_the_inverse():
    for c in (3, 8, 13):  # 3 and 13: padded to a power of two
        m = jnp.tril(jax.random.normal(jax.random.key(c), (2, c, c)), -1)
        np.testing.assert_allclose(
            jax.jit(unit_lower_inverse)(m) @ (jnp.eye(c) + m), jnp.broadcast_to(jnp.eye(c), (2, c, c)), atol=1e-5
        )


# per-head decay with C | T = 48: the hand-written backward (1: a step per chunk; 64 > T: one chunk);
# 5 ∤ T and per-step decays: the general variant (T padded)
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
def test_delta_chunked_equals_scan_in_float64(chunk, decay, variant):
    """Values, final state and every gradient (q, k, v, β, the log decay, the initial state) to ~1e-12."""
    with jax.enable_x64(True):
        q, k, v, beta, g, s0 = delta_inputs(t=48, dtype=jnp.float64)
        if decay == "head":
            g = jnp.log(jnp.array([0.1, 0.7, 0.999], jnp.float64))
        assert resolve("delta_rule", "chunked", length=48, chunk=chunk, per_head_decay=decay == "head") == variant
        args = (q, k, v, beta, g, s0)
        ((ls, (os_, ss)), gs), ((lc, (oc, sc)), gc) = (
            _grads(delta_rule, impl, chunk, args) for impl in ("scan", "chunked")
        )
        assert oc.dtype == jnp.float64
        np.testing.assert_allclose(oc, os_, rtol=0, atol=1e-12)
        np.testing.assert_allclose(sc, ss, rtol=0, atol=1e-12)
        np.testing.assert_allclose(lc, ls, rtol=1e-12)
        for a, b in zip(gc, gs):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-11)


def test_delta_chunked_float32_is_as_close_to_float64_as_the_scan():
    """Float32 tolerance: both float32 paths are compared with the float64 scan. The scan's own float32
    error is ~1e-6 at T 256 (outputs O(1), ‖k‖ = 1, β < 1: each step is a contraction, so errors do
    not grow with T); the chunked form must stay within 1e-5 of float64 (≈ 80 float32 ulps at 1) and
    within 4× the scan's own error + 1e-6, values and gradients."""
    with jax.enable_x64(True):
        q, k, v, beta, _, _ = delta_inputs(t=256, d=16, e=16, dtype=jnp.float64)
        g = jnp.log(jnp.array([0.1, 0.9, 0.999], jnp.float64))

        def out_and_grads(impl, *a):
            loss = lambda *a: jnp.sum(jnp.sin(delta_rule(*a, impl=impl, chunk=64)[0]))  # noqa: E731
            return delta_rule(*a, impl=impl, chunk=64)[0], jax.grad(loss, argnums=(0, 1, 2, 3))(*a)

        ref_o, ref_g = jax.jit(partial(out_and_grads, "scan"))(q, k, v, beta, g)
        ref_o, ref_g = np.asarray(ref_o), [np.asarray(x) for x in ref_g]
    x32 = [jnp.asarray(a, jnp.float32) for a in (q, k, v, beta, g)]
    err = {}
    for impl in ("scan", "chunked"):
        o, grads = jax.jit(partial(out_and_grads, impl))(*x32)
        assert o.dtype == jnp.float32
        err[impl] = [np.abs(np.asarray(o) - ref_o).max()] + [
            np.abs(np.asarray(a) - b).max() / np.abs(b).max() for a, b in zip(grads, ref_g)
        ]
    for c, s in zip(err["chunked"], err["scan"]):
        assert c < 1e-5 and c <= 4 * s + 1e-6, err


def test_delta_state_carry_two_halves_equals_one_pass():
    q, k, v, beta, g, _ = delta_inputs(t=40)
    full, s_full = _delta(q, k, v, beta, g, chunk=8)
    a, s_a = _delta(q[:, :17], k[:, :17], v[:, :17], beta[:, :17], g[:, :17], chunk=8)
    b, s_b = _delta(q[:, 17:], k[:, 17:], v[:, 17:], beta[:, 17:], g[:, 17:], initial_state=s_a, chunk=8)
    np.testing.assert_allclose(jnp.concatenate([a, b], 1), full, atol=1e-5)
    np.testing.assert_allclose(s_b, s_full, atol=1e-5)


def test_delta_rule_stores_and_overwrites_an_association():
    """β = 1, no decay: writing v to a unit key and then v' to the same key leaves exactly v' (the error-
    correcting write the Hebbian sum k ⊗ v + k ⊗ v' lacks); an orthogonal key's value is untouched."""
    e = jnp.eye(4)
    k = jnp.stack([e[0], e[1], e[0]])[None, :, None]  # [1, 3, 1, 4]
    v = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])[None, :, None]
    for impl in ("scan", "chunked"):
        _, s = _delta(k, k, v, jnp.ones((1, 3, 1)), 0.0, impl=impl, chunk=2)
        np.testing.assert_allclose(e[0] @ s[0, 0], [5.0, 6.0], atol=1e-6)
        np.testing.assert_allclose(e[1] @ s[0, 0], [3.0, 4.0], atol=1e-6)


def shifted_inputs(t=30, b=2, h=3, d=4, width=3, seed=1):
    ks = jax.random.split(jax.random.key(seed), 7)
    q = jax.nn.elu(jax.random.normal(ks[0], (b, t, h, d))) + 1
    p = jax.random.normal(ks[1], (b, t, h, d))
    v = jax.random.normal(ks[2], (b, t, h, d + 1))
    taps = jax.random.normal(ks[3], (h, width))
    g = jnp.log(jnp.array([0.3, 0.9, 0.999]))
    s0 = jax.random.normal(ks[4], (b, h, d, d + 1))
    keys0 = jax.random.normal(ks[5], (b, width - 1, h, d))
    return q, p, v, g, taps, s0, keys0


def _phi(x):
    return jax.nn.elu(x) + 1.0


@pytest.mark.parametrize("chunk", [4, 7])  # 4 divides T = 28 (per-head kernel), 7 … also; 7 with T=30 is general
def test_shifted_chunked_equals_scan_with_gradients(chunk):
    q, p, v, g, taps, s0, keys0 = shifted_inputs()

    def loss(impl, q, p, v, g, taps, s0, keys0):
        o, s, keys = _shifted(q, p, v, g, taps, _phi, initial_state=s0, initial_keys=keys0, impl=impl, chunk=chunk)
        return jnp.sum(jnp.sin(o)) + 0.01 * jnp.sum(s**2) + jnp.sum(keys**3), (o, s, keys)

    grad = lambda impl: jax.jit(jax.grad(partial(loss, impl), argnums=tuple(range(7)), has_aux=True))  # noqa: E731
    (gs, outs), (gc, outc) = (grad(impl)(q, p, v, g, taps, s0, keys0) for impl in ("scan", "chunked"))
    for a, b in zip(outc, outs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    for a, b in zip(gc, gs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_shift_taps_at_init_write_the_previous_key():
    """Taps (0, 1): the key written at t is k_{t−1} (none at t = 0), i.e. ``k_{t−1} ⊗ v_t`` is stored."""
    q, p, v, g, _, _, _ = shifted_inputs(width=2)
    taps = jnp.zeros((3, 2)).at[:, 1].set(1.0)
    o, s, keys = _shifted(q, p, v, g, taps, _identity, chunk=5)
    prev = jnp.pad(p, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]
    o_ref, s_ref = _fast(q, prev, v, g, chunk=5)
    np.testing.assert_allclose(o, o_ref, atol=1e-5)
    np.testing.assert_allclose(s, s_ref, atol=1e-5)
    np.testing.assert_array_equal(keys, p[:, -1:])


def test_shifted_state_carry_two_halves_equals_one_pass():
    q, p, v, g, taps, _, _ = shifted_inputs()
    full, s_full, k_full = _shifted(q, p, v, g, taps, _phi, chunk=4)
    a, s_a, k_a = _shifted(q[:, :13], p[:, :13], v[:, :13], g, taps, _phi, chunk=4)
    b, s_b, k_b = _shifted(q[:, 13:], p[:, 13:], v[:, 13:], g, taps, _phi, initial_state=s_a, initial_keys=k_a, chunk=4)
    np.testing.assert_allclose(jnp.concatenate([a, b], 1), full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s_b, s_full, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(k_b, k_full)


def test_key_conv_is_causal_and_rules_are_causal():
    q, p, v, g, taps, _, _ = shifted_inputs()
    conv, _ = jax.jit(causal_key_conv)(p, taps)
    conv2, _ = jax.jit(causal_key_conv)(p.at[:, 10:].add(1.0), taps)
    np.testing.assert_array_equal(conv2[:, :10], conv[:, :10])
    base = _shifted(q, p, v, g, taps, _phi, chunk=4)[0]
    out = _shifted(q, p.at[:, 10:].add(1.0), v.at[:, 10:].add(1.0), g, taps, _phi, chunk=4)[0]
    np.testing.assert_allclose(out[:, :10], base[:, :10], atol=1e-6)
    assert not np.allclose(out[:, 10:], base[:, 10:])
    dq, dk, dv, beta, dg, _ = delta_inputs(t=20)
    base = _delta(dq, dk, dv, beta, dg, chunk=8)[0]
    out = _delta(dq, _unit(dk.at[:, 10:].add(1.0)), dv.at[:, 10:].add(1.0), beta.at[:, 10:].set(0.9), dg, chunk=8)[0]
    np.testing.assert_allclose(out[:, :10], base[:, :10], atol=1e-6)
    assert not np.allclose(out[:, 10:], base[:, 10:])


def test_impl_dispatch_of_the_rules():
    for op, values in (
        ("shifted_fast_weights", r"auto \| chunked \| scan"),
        ("delta_rule", r"auto \| chunked \| scan \| chunked_per_head \| chunked_general"),
    ):
        for platform in ("cpu", "gpu", "tpu"):
            assert resolve(op, "auto", platform=platform) is Impl.CHUNKED
        assert resolve(op, "scan") is Impl.SCAN
        with pytest.raises(ValueError, match=rf"unknown {op} impl 'magic' \({values}\)$"):
            resolve(op, "magic")
    assert resolve("delta_rule", "auto", length=64, chunk=16) is Impl.CHUNKED_PER_HEAD
    assert resolve("delta_rule", "auto", length=64, chunk=16, per_head_decay=False) is Impl.CHUNKED_GENERAL
    q, k, v, beta, g, _ = delta_inputs(t=8)
    with pytest.raises(ValueError, match="delta_rule impl 'chunked_per_head' needs a per-head log decay"):
        delta_rule(q, k, v, beta, g, impl="chunked_per_head")
