"""Spiralformer with a carried state (docs/long_context_attention.md): per-layer key/value caches under spiral
attention, the breath clock and silence share at document positions, TowerMemory in the state. Carried
windows equal one long window where the math says so; a reset row is a fresh start; causal with a state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_future_independent
from spiraljax import config, models
from spiraljax.data import glyphs
from spiraljax.ops import rhythm
from spiraljax.state import check_state, reset_rows

ROOT = config.PROJECT_ROOT
T = 24  # two breath cycles of 12
SMALL = ["model.d_model=32", "model.n_heads=2", "model.n_layers=2", f"model.seq_len={T}"]


def build(*overrides, t=T):
    cfg = config.load(ROOT / "configs" / "spiralformer_femto.yaml", SMALL + [f"model.seq_len={t}", *overrides])
    model = models.build(cfg.model)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, t), jnp.int32))
    apply = jax.jit(lambda tok, state=None, memory=None: model.apply(variables, tok, state=state, memory=memory))
    return cfg, model, apply


@pytest.fixture(scope="module")
def with_memory():
    return build()


@pytest.fixture(scope="module")
def sparse_no_memory():
    return build("model.memory.enabled=false", "model.spiral.impl=sparse")


def glyph_tokens(t, seed=1, silent_first=0):
    """Random non-PAD glyphs; the first ``silent_first`` positions silence glyphs (the silence gate closes)."""
    tok = jax.random.randint(jax.random.key(seed), (2, t), 1, glyphs.VOCAB_SIZE)
    quiet = jax.random.randint(jax.random.key(seed + 100), (2, t), 49, 65)
    return jnp.where(jnp.arange(t)[None, :] < silent_first, quiet, tok)


def run_windows(model, apply, toks, t=T):
    state, out, auxes = model.initial_state(toks.shape[0]), [], []
    for i in range(0, toks.shape[1], t):
        logits, aux = apply(toks[:, i : i + t], state)
        out.append(logits)
        auxes.append(aux)
        state = aux["state"]
    return jnp.concatenate(out, axis=1), auxes


def test_initial_state_layout_and_equals_no_state(with_memory):
    cfg, model, apply = with_memory
    state = model.initial_state(2)
    check_state(state, 2)
    assert set(state) == {"layers", "pos", "silent", "memory"} and state["pos"].dtype == jnp.int32
    assert state["layers"]["block_0"]["k"].shape == (2, cfg.model.cache_length, 2, 16)
    assert set(
        models.build(
            config.load(ROOT / "configs" / "spiralformer_femto.yaml", SMALL + ["model.memory.enabled=false"]).model
        ).initial_state(2)
    ) == {"layers", "pos", "silent"}
    toks = glyph_tokens(T)
    plain, aux_plain = apply(toks)
    carried, aux = apply(toks, state)
    np.testing.assert_allclose(carried, plain, atol=1e-5)
    assert aux["state"]["pos"].tolist() == [T, T]
    np.testing.assert_array_equal(aux["state"]["memory"]["valid"], aux_plain["memory"]["valid"])


@pytest.mark.parametrize("impl", ["sparse", "dense"])
def test_two_windows_with_the_cache_equal_one_window_of_2t_memory_off(impl):
    """M = T, memory off: exact (the offsets of 2T, the breath clock and silence share at document positions;
    the first window mostly silence so the silence gate is active across the boundary)."""
    _, model, apply = build("model.memory.enabled=false", f"model.spiral.impl={impl}", "model.smear_keys=true")
    toks = glyph_tokens(2 * T, silent_first=30)
    carried, auxes = run_windows(model, apply, toks)
    long, aux = apply(toks)
    assert float(aux["silence_gate"][:, T:].min()) < 1.0  # the gate acts in the second window
    np.testing.assert_allclose(auxes[1]["silence_gate"], aux["silence_gate"][:, T:], atol=1e-6)
    np.testing.assert_allclose(carried, long, atol=2e-5)


@pytest.mark.parametrize("write_every", [1, 3])
def test_two_windows_equal_2t_with_tower_memory_when_t_is_a_multiple_of_the_cycle(write_every, with_memory):
    """Memory on, T = 2 breath cycles: every cycle lies in one window, so the paintings after W1 are exactly
    those the 2T window holds when it reaches W2, and the logits agree (write_every counts the document's
    cycles: with 3, cycles 0 and 3 are written)."""
    _, model, apply = with_memory if write_every == 1 else build(f"model.memory.write_every={write_every}")
    toks = glyph_tokens(2 * T, seed=3)
    carried, auxes = run_windows(model, apply, toks)
    long, aux = apply(toks)
    np.testing.assert_allclose(carried, long, atol=2e-5)
    assert float(auxes[1]["memory_hits"].min()) > 0  # W2 read paintings written in W1
    np.testing.assert_allclose(auxes[1]["state"]["memory"]["content"], aux["memory"]["content"], atol=2e-5)


def test_paintings_after_w1_are_the_memory_w2_starts_from_when_a_cycle_straddles():
    """T = 18 (1.5 cycles): the cycle cut by the boundary becomes two paintings, so the logits differ from
    the 2T window; the memory W2 starts from is W1's final tower, and it is used."""
    t = 18
    _, model, apply = build(t=t)
    toks = glyph_tokens(2 * t, seed=4)
    state = model.initial_state(2)
    _, aux1 = apply(toks[:, :t], state)
    for name, leaf in aux1["state"]["memory"].items():
        np.testing.assert_array_equal(leaf, aux1["memory"][name])
    with_tower, aux2 = apply(toks[:, t:], aux1["state"])
    assert float(aux2["memory_hits"].min()) > 0
    empty = {**aux1["state"], "memory": state["memory"]}
    assert not np.allclose(with_tower, apply(toks[:, t:], empty)[0], atol=1e-4)
    assert aux2["phase"].tolist() == [np.asarray(rhythm.sequence_phases(t, t)).tolist()] * 2  # document clock


def test_reset_row_equals_a_fresh_start(with_memory):
    _, model, apply = with_memory
    first, second = glyph_tokens(T, seed=5), glyph_tokens(T, seed=6)
    _, aux = apply(first, model.initial_state(2))
    state = reset_rows(aux["state"], model.initial_state(2), jnp.array([False, True]))
    got, _ = apply(second, state)
    np.testing.assert_allclose(got[1], apply(second)[0][1], atol=1e-5)
    np.testing.assert_allclose(got[0], apply(jnp.concatenate([first, second], 1))[0][0, T:], atol=2e-5)


@pytest.mark.parametrize("with_state", [False, True])
def test_future_tokens_do_not_change_past_logits(with_state, sparse_no_memory, with_memory):
    for _, model, apply in (sparse_no_memory, with_memory):
        state = apply(glyph_tokens(T, seed=7), model.initial_state(2))[1]["state"] if with_state else None
        assert_future_independent(
            lambda tok: apply(tok, state)[0], glyph_tokens(T, seed=8), (0, 9, 20), glyphs.VOCAB_SIZE, shift=5, atol=1e-5
        )


def test_spiral_plus_local_offsets_carry_exactly():
    cfg, model, apply = build("model.memory.enabled=false", "model.spiral.pattern=none", "model.spiral.local=5")
    assert cfg.model.offsets(48) == (0, 1, 2, 3, 4)
    assert build_offsets("model.spiral.local=3")(40) == (0, 1, 2, 4, 8, 16, 32)
    toks = glyph_tokens(2 * T, seed=9)
    np.testing.assert_allclose(run_windows(model, apply, toks)[0], apply(toks)[0], atol=2e-5)
    assert_future_independent(
        lambda tok: apply(tok)[0], glyph_tokens(T, seed=10), (3, 15), glyphs.VOCAB_SIZE, shift=5, atol=1e-5
    )


def build_offsets(*overrides):
    return config.load(ROOT / "configs" / "spiralformer_femto.yaml", SMALL + list(overrides)).model.offsets


def test_memory_keyword_stays_and_is_refused_beside_a_state(with_memory):
    _, model, apply = with_memory
    toks = glyph_tokens(T, seed=11)
    _, aux = apply(toks)
    apply(toks, memory=aux["memory"])  # today's keyword works
    with pytest.raises(ValueError, match=r"state\['memory'\]; memory= must be None"):
        apply(toks, model.initial_state(2), aux["memory"])
