"""spiraljax.state: per-row reset, the batch-first check and stop-gradient of a carried state."""

import jax
import jax.numpy as jnp
import pytest

from spiraljax.state import check_state, reset_rows, stop_state


def test_reset_rows_replaces_exactly_the_flagged_rows():
    state = {"a": jnp.arange(6.0).reshape(3, 2), "n": {"pos": jnp.array([5, 6, 7], jnp.int32)}}
    initial = jax.tree.map(jnp.zeros_like, state)
    out = reset_rows(state, initial, jnp.array([True, False, True]))
    assert out["a"].tolist() == [[0.0, 0.0], [2.0, 3.0], [0.0, 0.0]]
    assert out["n"]["pos"].tolist() == [0, 6, 0]
    assert out["n"]["pos"].dtype == jnp.int32
    same = reset_rows(state, initial, jnp.zeros(3, bool))
    assert jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.all(x == y)), same, state))


def test_check_state_names_the_leaf_that_is_not_batch_first():
    check_state({"k": jnp.zeros((2, 4, 3))}, 2)
    with pytest.raises(ValueError, match=r"state\['cache'\]\['k'\].*\[2, \.\.\.\]"):
        check_state({"cache": {"k": jnp.zeros((4, 2, 3))}}, 2)
    with pytest.raises(ValueError, match="shape"):
        check_state({"pos": jnp.zeros(())}, 2)


def test_stop_state_blocks_the_gradient():
    grad = jax.grad(lambda x: jnp.sum(stop_state({"s": x})["s"] * x))(jnp.ones(3))
    assert grad.tolist() == [1.0, 1.0, 1.0]  # only the direct x factor, not through the state
