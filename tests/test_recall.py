"""MQAR recall metric: an ideal induction head scores 1, models that cannot look keys up score near
the 'guess among present values' reference; the suite's tables by length and by number of pairs."""

import jax.numpy as jnp
import numpy as np
import pytest

from spiraljax.data.recall import MQARDataConfig, mqar_batch
from spiraljax.eval.recall import first_query_mask, guess_present_accuracy, recall_stats


class _Lookup:
    """Stand-in model: logits one-hot at the token that followed the latest earlier occurrence of the
    current token (an exact induction head), or at the latest value in the sequence (no lookup)."""

    def __init__(self, lookup: bool):
        self.lookup = lookup

    def apply(self, variables, tokens, train=False, step=0, **kw):
        t = tokens.shape[1]
        i, j = jnp.arange(t)[:, None], jnp.arange(t)[None, :]
        if self.lookup:
            hit = (tokens[:, :, None] == tokens[:, None, :]) & (j < i)
        else:  # the value (odd position) right before position i, regardless of key
            hit = jnp.broadcast_to((j % 2 == 0) & (j < i - 1), (tokens.shape[0], t, t))
        src = jnp.max(jnp.where(hit, j, -1), axis=-1)  # latest match, −1 if none
        nxt = jnp.take_along_axis(tokens, jnp.clip(src + 1, 0, t - 1), axis=1)
        return jnp.eye(256)[jnp.where(src >= 0, nxt, 0)], {}


def test_ideal_induction_head_recalls_everything_and_a_non_lookup_model_only_guesses():
    cfg = MQARDataConfig(min_pairs=4, max_pairs=8)
    ideal = recall_stats(_Lookup(True), None, cfg, 64, n_batches=2, batch=8)
    assert ideal["accuracy"] == 1.0 and ideal["first_accuracy"] == 1.0
    blind = recall_stats(_Lookup(False), None, cfg, 64, n_batches=2, batch=8)
    assert blind["first_accuracy"] < 0.3 and ideal["guess_present"] < 0.3
    assert recall_stats(_Lookup(True), None, cfg, 64, n_batches=1, batch=8, pairs=5)["guess_present"] >= 0.2


def test_first_query_mask_and_present_value_guess_by_hand():
    # pairs (65→129, 66→129, 67→130), then queries 66, 65, 66, 67
    inputs = np.array([[65, 129, 66, 129, 67, 130, 66, 129, 65, 129, 66, 129, 67, 130]])
    mask = np.zeros_like(inputs, np.float32)
    mask[0, 6::2] = 1.0
    np.testing.assert_array_equal(np.flatnonzero(first_query_mask(inputs, mask)[0]), [6, 8, 12])
    assert guess_present_accuracy(inputs, mask) == pytest.approx(1 / 2)  # two distinct values stored


def test_fixed_pair_count_is_respected():
    b = mqar_batch(0, 0, 4, 64, 6, 6, 64, 64)
    for row in range(4):
        assert np.flatnonzero(b["mask"][row])[0] == 12  # 6 pairs, queries start at position 12
