"""K-SSM carries its oscillator phases across windows (docs/carried_state.md): two carried windows of T
equal one window of 2T, initial_state equals state=None, a reset row equals a fresh start, and future
tokens never change past logits with a state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_future_independent
from spiraljax import config, models
from spiraljax.state import check_state, reset_rows

ROOT = config.PROJECT_ROOT
T = 16


@pytest.fixture(scope="module", params=["v1", "v3", "v3_remat"])
def kssm(request):
    """A tiny K-SSM (v3 also with the rematerialised chunked scan), parameters, two windows and the
    jitted apply with a state."""
    version, *remat = request.param.split("_")
    extra = ["model.remat_chunk=5"] if remat else []
    cfg = config.load(ROOT / "configs" / f"kssm_{version}_tiny.yaml", [f"model.seq_len={T}", *extra])
    model = models.build(cfg.model)
    tokens = jax.random.randint(jax.random.key(3), (2, 2 * T), 0, 256)
    variables = model.init(jax.random.key(0), tokens[:, :T])
    apply = jax.jit(lambda x, s: model.apply(variables, x, state=s))
    return model, variables, tokens, apply


def test_initial_state_is_batch_first_and_equals_no_state(kssm):
    model, variables, tokens, apply = kssm
    state = model.initial_state(2)
    check_state(state, 2)
    assert state["theta"].dtype == jnp.float32 and state["started"].dtype == bool
    logits, aux = apply(tokens[:, :T], state)
    np.testing.assert_allclose(logits, apply(tokens[:, :T], None)[0], atol=1e-6)
    assert "state" not in apply(tokens[:, :T], None)[1]
    out = aux["state"]
    assert jax.tree.map(lambda x: (x.shape, x.dtype), out) == jax.tree.map(lambda x: (x.shape, x.dtype), state)
    assert bool(out["started"].all()) and float(out["theta"].min()) >= 0 and float(out["theta"].max()) < 2 * np.pi


def test_two_carried_windows_equal_one_window_of_twice_the_length(kssm):
    model, variables, tokens, apply = kssm
    whole = apply(tokens, None)[0]
    first, aux = apply(tokens[:, :T], model.initial_state(2))
    second, _ = apply(tokens[:, T:], aux["state"])
    np.testing.assert_allclose(first, whole[:, :T], atol=1e-5)
    np.testing.assert_allclose(second, whole[:, T:], atol=2e-4, rtol=1e-4)
    fresh = apply(tokens[:, T:], model.initial_state(2))[0]
    assert not np.allclose(fresh, whole[:, T:], atol=1e-3)  # the carried phases matter


def test_a_reset_row_starts_fresh_and_the_other_keeps_its_state(kssm):
    model, variables, tokens, apply = kssm
    carried = apply(tokens[:, :T], model.initial_state(2))[1]["state"]
    state = reset_rows(carried, model.initial_state(2), jnp.array([True, False]))
    logits = apply(tokens[:, T:], state)[0]
    np.testing.assert_allclose(logits[0], apply(tokens[:, T:], None)[0][0], atol=1e-5)
    np.testing.assert_allclose(logits[1], apply(tokens[:, T:], carried)[0][1], atol=1e-6)


def test_future_tokens_never_change_past_logits_with_a_state(kssm):
    model, variables, tokens, apply = kssm
    carried = apply(tokens[:, :T], model.initial_state(2))[1]["state"]
    assert_future_independent(lambda x: apply(x, carried)[0], tokens[:, T:], (0, 7, T - 2), 256, shift=31)
