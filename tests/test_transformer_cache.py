"""Dense baseline with local attention and a Transformer-XL cache (docs/long_context_attention.md): the config
keys, initial_state = no state, carried windows = one long window where the math says so, a reset row =
a fresh start, and no future token changes a past logit (with and without a state)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_future_independent
from spiraljax import config, models
from spiraljax.errors import ConfigError
from spiraljax.state import check_state, reset_rows

T = 8
SMALL = ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", f"model.seq_len={T}"]


def build(*overrides):
    cfg = config.load(None, SMALL + list(overrides))
    model = models.build(cfg.model)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, T), jnp.int32))
    return cfg, model, jax.jit(lambda tok, state=None: model.apply(variables, tok, state=state))


@pytest.fixture(scope="module")
def dense():
    return build()


@pytest.fixture(scope="module")
def local():
    return build("model.attention=local", "model.window=3")


def tokens(t, seed=1):
    return jax.random.randint(jax.random.key(seed), (2, t), 0, 256)


def run_windows(model, apply, toks, state=None):
    """Logits of consecutive windows of T with the state carried from the initial one."""
    state = model.initial_state(toks.shape[0]) if state is None else state
    out = []
    for i in range(0, toks.shape[1], T):
        logits, aux = apply(toks[:, i : i + T], state)
        out.append(logits)
        state = aux["state"]
    return jnp.concatenate(out, axis=1), state


def test_config_keys_and_one_line_errors():
    cfg = config.load(None, ["model.attention=local", "model.window=5"]).model
    assert (cfg.attention, cfg.window, cfg.cache_length) == ("local", 5, 4)
    assert config.load(None, []).model.cache_length == config.load(None, []).model.seq_len
    assert config.load(None, ["model.cache_len=3"]).model.cache_length == 3
    old = config.load(None, ["model.window=16"]).model  # written before `attention` existed: a sliding window
    assert (old.attention, old.window) == ("local", 16)
    with pytest.raises(ConfigError, match="attention: local needs model.window"):
        config.load(None, ["model.attention=local"])
    with pytest.raises(ConfigError, match="model.window=4 is the width of attention: local"):
        config.load(None, ["model.attention=dense", "model.window=4"])
    with pytest.raises(ConfigError, match="local_impl applies to attention: local only"):
        config.load(None, ["model.local_impl=blocked"])
    with pytest.raises(ConfigError, match="cache_len"):
        config.load(None, ["model.cache_len=-1"])


def test_initial_state_layout_and_equals_no_state(dense, local):
    for cfg, model, apply in (dense, local):
        state = model.initial_state(2)
        check_state(state, 2)
        m, h, d = cfg.model.cache_length, cfg.model.n_heads, cfg.model.d_model // cfg.model.n_heads
        layer = state["layers"]["block_1"]
        assert layer["k"].shape == layer["v"].shape == (2, m, h, d) and layer["valid"].shape == (2, m)
        assert layer["prev_key"].shape == (2, h, d) and not bool(layer["valid"].any())
        toks = tokens(T)
        plain, aux = apply(toks)
        assert aux == {}
        carried, aux = apply(toks, state)
        np.testing.assert_allclose(carried, plain, atol=1e-6)
        assert jax.tree.structure(aux["state"]) == jax.tree.structure(state)
        shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)  # noqa: E731
        assert shapes(aux["state"]) == shapes(state)


def test_xl_cache_two_windows_equal_one_window_of_twice_the_length(dense):
    """M = T: the second window's queries see every earlier key, as in one window of 2T."""
    _, model, apply = dense
    toks = tokens(2 * T)
    long, _ = apply(toks)
    carried, _ = run_windows(model, apply, toks)
    np.testing.assert_allclose(carried, long, atol=2e-5)
    three = tokens(3 * T)  # the cache holds one window: the third window no longer sees the first
    assert not np.allclose(run_windows(model, apply, three)[0][:, 2 * T :], apply(three)[0][:, 2 * T :], atol=1e-3)


@pytest.mark.parametrize("window", [1, 3, 11])
def test_local_cache_any_number_of_windows_equal_one_long_window(window):
    """A cache of w − 1 keys is all a window of w needs: 4 carried windows = one window of 4T (w > T too)."""
    _, model, apply = build("model.attention=local", f"model.window={window}")
    toks = tokens(4 * T, seed=2)
    np.testing.assert_allclose(run_windows(model, apply, toks)[0], apply(toks)[0], atol=2e-5)


def test_local_blocked_and_dense_models_agree():
    toks = tokens(4 * T, seed=3)
    outs = [
        build("model.attention=local", "model.window=3", f"model.local_impl={impl}")[2](toks)[0]
        for impl in ("blocked", "dense")
    ]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


def test_reset_row_equals_a_fresh_start(local):
    _, model, apply = local
    first, second = tokens(T, seed=4), tokens(T, seed=5)
    _, state = run_windows(model, apply, first)
    state = reset_rows(state, model.initial_state(2), jnp.array([True, False]))
    got, _ = apply(second, state)
    np.testing.assert_allclose(got[0], apply(second)[0][0], atol=1e-6)  # fresh
    np.testing.assert_allclose(got[1], apply(jnp.concatenate([first, second], 1))[0][1, T:], atol=2e-5)  # carried


@pytest.mark.parametrize("which", ["dense", "local"])
@pytest.mark.parametrize("with_state", [False, True])
def test_future_tokens_do_not_change_past_logits(which, with_state, dense, local, request):
    _, model, apply = {"dense": dense, "local": local}[which]
    state = run_windows(model, apply, tokens(T, seed=6))[1] if with_state else None
    assert_future_independent(lambda tok: apply(tok, state)[0], tokens(T), (0, 3, 6), 256, shift=17, atol=1e-6)


def test_a_state_of_another_shape_is_a_one_line_error(dense):
    _, model, apply = dense
    state = model.initial_state(2)
    bad = {"layers": {**state["layers"], "block_0": {**state["layers"]["block_0"], "valid": jnp.zeros((2, 3), bool)}}}
    with pytest.raises(ValueError, match=r"state\['layers'\]\['block_0'\]\['valid'\]: expected bool\[2, 8\]"):
        apply(tokens(T), bad)
    with pytest.raises(ValueError, match="missing"):
        apply(tokens(T), {"layers": {}})
