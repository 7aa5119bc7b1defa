"""Kernel choice in one place (spiraljax.ops.impl): ``auto`` per platform, explicit choices pass through,
the input rules (fast weights' chunked variant, Kuramoto's remat), bad values named in one line, and the
ops dispatching on what ``resolve`` returns."""

from __future__ import annotations

import importlib
import pkgutil
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spiraljax.models
from spiraljax.ops import impl
from spiraljax.ops.hebbian import fast_weights, fast_weights_chunked
from spiraljax.ops.impl import AUTO, CHOICES, DENSE_BELOW, Impl, allowed, auto_choice, platform_name, resolve
from spiraljax.ops.kuramoto import kuramoto_scan
from spiraljax.ops.spiral import spiral_attention


def test_auto_follows_the_row_of_the_platform(monkeypatch):
    """``auto`` reads the platform's override, else the op's default (cuda / rocm, in any case, read the
    gpu overrides). No platform overrides today, so overrides are patched in: a resolve that ignored
    the platform, an alias or the defaults would pass on the shipped table and fails here."""
    monkeypatch.setattr(
        impl,
        "AUTO",
        {**AUTO, "spiral_attention": Impl.SPARSE, "fast_weights": Impl.CHUNKED, "kuramoto_scan": Impl.SCAN},
    )
    monkeypatch.setattr(
        impl,
        "AUTO_OVERRIDES",
        {
            "gpu": {"spiral_attention": Impl.DENSE, "fast_weights": Impl.SCAN, "kuramoto_scan": Impl.REMAT},
            "tpu": {"fast_weights": Impl.CHUNKED_GENERAL},
        },
    )
    rows = {
        "spiral_attention": {"cpu": Impl.SPARSE, "gpu": Impl.DENSE, "tpu": Impl.SPARSE},
        "fast_weights": {"cpu": Impl.CHUNKED, "gpu": Impl.SCAN, "tpu": Impl.CHUNKED_GENERAL},
        "kuramoto_scan": {"cpu": Impl.SCAN, "gpu": Impl.REMAT, "tpu": Impl.SCAN},
    }
    for platform, row in (("cpu", "cpu"), ("gpu", "gpu"), ("tpu", "tpu"), ("cuda", "gpu"), ("ROCM", "gpu")):
        assert resolve("spiral_attention", "auto", platform=platform) is rows["spiral_attention"][row], platform
        assert resolve("fast_weights", Impl.AUTO, platform=platform) is rows["fast_weights"][row], platform
        got = resolve("kuramoto_scan", "auto", platform=platform, length=64, chunk=16)
        assert got is rows["kuramoto_scan"][row], platform
    # the input rules apply to what the row gives: chunked → its variant, remat without a chunk → the scan
    assert resolve("fast_weights", "auto", platform="cpu", length=64, chunk=16) is Impl.CHUNKED_PER_HEAD
    assert resolve("kuramoto_scan", "auto", platform="gpu", length=64) is Impl.SCAN


def test_auto_defaults_to_the_running_backend_and_every_row_is_concrete():
    assert platform_name() == jax.default_backend()
    assert resolve("spiral_attention") is auto_choice("spiral_attention")
    assert set(AUTO) == set(CHOICES) and all(AUTO[op] in CHOICES[op] for op in AUTO)
    for platform, overrides in impl.AUTO_OVERRIDES.items():
        assert platform in ("cpu", "gpu", "tpu") and all(c in CHOICES[op] for op, c in overrides.items())


@pytest.mark.parametrize("op", list(CHOICES))
def test_explicit_choices_pass_through(op):
    for choice in CHOICES[op]:
        for given in (choice, choice.value):  # the enum or the config/YAML string
            kw = {"chunk": 4} if choice is Impl.REMAT else {}  # remat needs its chunk
            got = resolve(op, given, platform="tpu", **kw)
            assert got is choice and got == choice.value and str(got) == choice.value


def test_bad_values_are_one_line_errors_naming_op_and_values():
    with pytest.raises(ValueError, match=r"^unknown spiral_attention impl 'sprase' \(auto \| sparse \| dense\)$"):
        resolve("spiral_attention", "sprase")
    with pytest.raises(ValueError, match=r"unknown spiral_attention impl 'scan'"):  # another op's value
        resolve("spiral_attention", Impl.SCAN)
    with pytest.raises(
        ValueError,
        match=r"unknown fast_weights impl 'magic' \(auto \| chunked \| scan \| "
        r"chunked_per_head \| chunked_general\)",
    ):
        resolve("fast_weights", "magic")
    with pytest.raises(ValueError, match=r"unknown kuramoto_scan impl None \(auto \| scan \| remat\)"):
        resolve("kuramoto_scan", None)
    with pytest.raises(ValueError, match="unknown op 'attention'"):
        resolve("attention", "auto")
    with pytest.raises(ValueError, match="unknown platform 'tpuu'"):
        resolve("spiral_attention", "auto", platform="tpuu")
    assert allowed("kuramoto_scan") == (Impl.AUTO, Impl.SCAN, Impl.REMAT)


def test_spiral_attention_auto_is_dense_below_the_crossover_length():
    assert DENSE_BELOW["cpu"] == 256 and set(DENSE_BELOW) == {"cpu", "gpu", "tpu"}
    for t, want in ((1, Impl.DENSE), (32, Impl.DENSE), (255, Impl.DENSE), (256, Impl.SPARSE), (8192, Impl.SPARSE)):
        assert resolve("spiral_attention", "auto", platform="cpu", length=t) is want, t
    assert resolve("spiral_attention", "auto", platform="cpu") is Impl.SPARSE  # no length: the table row
    for platform in ("gpu", "tpu"):  # not measured: the table row
        got = resolve("spiral_attention", "auto", platform=platform, length=32)
        assert got is auto_choice("spiral_attention", platform)
    for explicit in (Impl.SPARSE, Impl.DENSE):  # explicit choices stay
        for t in (32, 4096):
            assert resolve("spiral_attention", explicit.value, platform="cpu", length=t) is explicit


def test_fast_weights_chunked_variant_rule():
    rule = lambda **kw: resolve("fast_weights", "chunked", **kw)  # noqa: E731
    assert rule(length=50, chunk=25) is Impl.CHUNKED_PER_HEAD  # C | T, per-head decay
    assert rule(length=50, chunk=64) is Impl.CHUNKED_PER_HEAD  # C capped at T
    assert rule(length=50, chunk=16) is Impl.CHUNKED_GENERAL  # C ∤ T
    assert rule(length=48, chunk=16, per_head_decay=False) is Impl.CHUNKED_GENERAL  # per-step decay
    assert resolve("fast_weights", "chunked_general", length=48, chunk=16) is Impl.CHUNKED_GENERAL
    with pytest.raises(ValueError, match="chunked_per_head.*T=50, chunk=16"):
        resolve("fast_weights", "chunked_per_head", length=50, chunk=16)
    with pytest.raises(ValueError, match="chunked_per_head.*per-head decay=False"):
        resolve("fast_weights", "chunked_per_head", length=48, chunk=16, per_head_decay=False)


def test_kuramoto_remat_rule():
    assert resolve("kuramoto_scan", "auto", length=20, chunk=None) is Impl.SCAN
    assert resolve("kuramoto_scan", "auto", length=20, chunk=5) is Impl.REMAT
    assert resolve("kuramoto_scan", "auto", length=20, chunk=20) is Impl.SCAN  # one chunk: the plain scan
    assert resolve("kuramoto_scan", "remat", length=20, chunk=20) is Impl.REMAT  # asked for by name: kept
    assert resolve("kuramoto_scan", "scan", length=20, chunk=5) is Impl.SCAN
    with pytest.raises(ValueError, match="'remat' needs remat_chunk"):
        resolve("kuramoto_scan", "remat", length=20)


def test_config_impl_strings_are_enum_values():
    """Every Literal of a model config field named *impl is a value of Impl that some op accepts."""
    found = set()
    for info in pkgutil.iter_modules(spiraljax.models.__path__):
        module = importlib.import_module(f"spiraljax.models.{info.name}")
        for obj in vars(module).values():
            for name, field in getattr(obj, "model_fields", {}).items() if isinstance(obj, type) else ():
                if name.endswith("impl") and typing.get_origin(field.annotation) is typing.Literal:
                    found |= set(typing.get_args(field.annotation))
    assert {"sparse", "dense", "chunked", "scan"} <= found
    for value in found:
        assert Impl(value) is Impl.AUTO or any(Impl(value) in choices for choices in CHOICES.values()), value


def qkv(shape, seed=0):
    return tuple(jax.random.normal(k, shape) for k in jax.random.split(jax.random.key(seed), 3))


def test_ops_run_what_resolve_returns():
    q, k, v = qkv((2, 19, 2, 8))
    auto = resolve("spiral_attention", "auto", length=19)
    np.testing.assert_array_equal(spiral_attention(q, k, v, impl="auto"), spiral_attention(q, k, v, impl=auto))
    np.testing.assert_array_equal(spiral_attention(q, k, v), spiral_attention(q, k, v, impl=auto))  # the default
    np.testing.assert_allclose(spiral_attention(q, k, v, impl=Impl.DENSE), spiral_attention(q, k, v), atol=1e-5)
    with pytest.raises(ValueError, match=r"unknown spiral_attention impl 'scan' \(auto \| sparse \| dense\)"):
        spiral_attention(q, k, v, impl="scan")

    q, k, v = qkv((2, 48, 3, 4), seed=1)
    g = jnp.log(jnp.array([0.1, 0.5, 0.99]))
    per_head, s_head = fast_weights(q, k, v, g, chunk=16)
    np.testing.assert_array_equal(per_head, fast_weights(q, k, v, g, chunk=16, impl="chunked_per_head")[0])
    np.testing.assert_array_equal(per_head, fast_weights(q, k, v, g, chunk=16, impl="auto")[0])
    general, s_general = fast_weights(q, k, v, g, chunk=16, impl=Impl.CHUNKED_GENERAL)  # the other variant
    np.testing.assert_allclose(general, per_head, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s_general, s_head, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="chunked_per_head"):
        fast_weights(q, k, v, g, chunk=20, impl="chunked_per_head")
    with pytest.raises(ValueError, match="fast_weights_chunked impl 'scan'"):
        fast_weights_chunked(q, k, v, g, impl="scan")

    theta0 = jax.random.uniform(jax.random.key(2), (2, 6), maxval=6.28)
    omega = 0.3 * jax.random.normal(jax.random.key(3), (2, 12, 6))
    coupling = jnp.full((2, 12), 2.0)
    plain, _ = kuramoto_scan(theta0, omega, coupling, 0.1)
    for which, chunk in (("scan", 5), ("remat", 5), ("remat", 40), ("auto", 12)):
        out, final = kuramoto_scan(theta0, omega, coupling, 0.1, remat_chunk=chunk, impl=which)
        np.testing.assert_allclose(out, plain, atol=1e-6)
        np.testing.assert_array_equal(final, out[:, -1])
    with pytest.raises(ValueError, match="'remat' needs remat_chunk"):
        kuramoto_scan(theta0, omega, coupling, 0.1, impl="remat")
