"""The one setup path (spiraljax.train.setup) and the loop's per-family progress fields."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from conftest import TINY
from spiraljax import config
from spiraljax.train.setup import setup
from spiraljax.train.step import init_state, make_train_step


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return config.load(None, TINY + [f"data.cache_dir={cache}"])


def test_setup_builds_the_state_and_step_the_pieces_give(tiny):
    """The abstract state is the traced initial state, and the jitted step (mesh or none) gives the same
    loss and parameters as the step built by hand from model, optimizer and first batch."""
    s = setup(tiny)
    by_hand = init_state(s.model, s.tx, s.sample_inputs, tiny.train.seed)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), s.abstract_state) == jax.tree.map(
        lambda a: (a.shape, a.dtype), by_hand
    )
    batch = s.batch(0)
    want_state, want = jax.jit(make_train_step(s.model, s.tx))(by_hand, batch)
    for built in (s, setup(tiny, mesh=False)):
        assert (built.mesh is None) == (built is not s)
        state, out = built.jit_step()(built.init_state(), batch)
        np.testing.assert_allclose(out["loss"], want["loss"], rtol=1e-6)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), state["params"], want_state["params"]
        )


def test_the_standard_hooks_pass_the_families_progress_fields(tiny):
    from spiraljax.eval.tone import progress_fields
    from spiraljax.experiment import standard_hooks

    s = setup(tiny, mesh=False)
    assert standard_hooks(tiny, s.model, s.dataset).progress is progress_fields


def test_progress_fields_show_the_kssm_zone_and_nothing_for_other_families():
    """The loop's progress bar: loss, tok/s, then the family's fields from the standard hooks (a K-SSM's
    tone zone of R_mean), then other scalar metrics; a transformer's metrics give no zone."""
    from spiraljax.eval.tone import progress_fields
    from spiraljax.train.loop import _postfix

    kssm = {"loss": 2.5, "ce": 2.5, "R_mean": 0.6, "R_std": 0.1}
    shown = _postfix(kssm, 1234.0, progress_fields)
    assert list(shown) == ["loss", "tok/s", "zone", "R_mean", "R_std"]
    assert shown["zone"] == "🌀 Mystery" and shown["tok/s"] == "1,234"
    assert "zone" not in _postfix({"loss": 2.5, "ce": 2.5}, 1.0, progress_fields)
    assert "zone" not in _postfix(kssm, 1.0)  # the bare loop: no family fields
