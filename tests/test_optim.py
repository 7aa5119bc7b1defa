"""The learning-rate schedule and the weight-decay mask of ``spiraljax.train.optim``."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spiraljax import models
from spiraljax.config import TrainConfig
from spiraljax.train.optim import decay_mask, lr_schedule, make_optimizer, path_str


def values(cfg: TrainConfig, upto: int) -> np.ndarray:
    sched = lr_schedule(cfg)
    return np.array([float(sched(s)) for s in range(upto + 1)])


def test_schedule_warmup_peak_cosine_and_end_value():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1e-2, min_lr_ratio=0.1)
    lr = values(cfg, 120)
    peak, end = 1e-2, 1e-3
    assert lr[0] == 0.0
    np.testing.assert_allclose(lr[:11], peak * np.arange(11) / 10, rtol=1e-5, atol=1e-9)  # linear warmup
    assert lr[10] == pytest.approx(peak, rel=1e-6) and lr.max() == pytest.approx(peak, rel=1e-6)
    decay = lr[10:101]
    assert np.all(np.diff(decay) <= 1e-9) and decay[0] > decay[-1]  # monotone after warmup
    for s in (10, 32, 55, 77, 100):  # the cosine itself
        want = end + (peak - end) * 0.5 * (1 + math.cos(math.pi * (s - 10) / 90))
        assert lr[s] == pytest.approx(want, rel=1e-5), s
    assert lr[55] == pytest.approx((peak + end) / 2, rel=1e-5)
    np.testing.assert_allclose(lr[100:], end, rtol=1e-6)  # held at the end value


def test_schedule_without_warmup_starts_at_the_peak():
    lr = values(TrainConfig(steps=50, warmup_steps=0, lr=3e-3, min_lr_ratio=0.0), 50)
    assert lr[0] == pytest.approx(3e-3, rel=1e-6)
    assert np.all(np.diff(lr) <= 1e-9) and lr[50] == pytest.approx(0.0, abs=1e-9)


def test_schedule_warmup_longer_than_the_run_is_cut_to_reach_the_peak():
    """warmup_steps ≥ steps: the warmup ends at steps − 1 (the peak is still reached), then the end value."""
    lr = values(TrainConfig(steps=5, warmup_steps=50, lr=1e-2, min_lr_ratio=0.1), 6)
    np.testing.assert_allclose(lr[:5], 1e-2 * np.arange(5) / 4, rtol=1e-5)
    assert lr[5] == pytest.approx(1e-3, rel=1e-5)


@pytest.fixture
def tiny_params(tiny_cfg):
    model = models.build(tiny_cfg.model)
    tokens = jnp.zeros((1, tiny_cfg.model.seq_len), jnp.int32)
    return jax.jit(model.init)(jax.random.key(0), tokens)["params"]


def flat(tree) -> dict[str, object]:
    return {path_str(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_decay_mask_split_on_the_tiny_transformer(tiny_params):
    """Matrices (kernels, the embedding table) are decayed; biases, norm scales and per-head vectors are not."""
    mask = flat(decay_mask(tiny_params))
    decayed = {p for p, m in mask.items() if m}
    kept = set(mask) - decayed
    assert decayed and kept
    assert all(p.endswith(("/kernel", "/embedding")) for p in decayed), decayed
    assert all(p.endswith(("/bias", "/scale", "/smear")) for p in kept), kept
    assert {p for p in mask if p.endswith("/kernel")} <= decayed  # every kernel
    assert "embed/embedding" in decayed
    assert {p for p in mask if p.endswith(("/bias", "/scale"))} <= kept  # every bias / LN scale
    assert "ln_f/scale" in kept and "block_0/LayerNorm_0/bias" in kept


def test_zero_gradient_update_shrinks_decayed_leaves_only(tiny_cfg, tiny_params):
    """With zero gradients Adam's step is 0, so the update is the decoupled decay alone:
    after n steps p·Π_s(1 − lr_s·wd) for decayed leaves, unchanged for the others."""
    cfg = tiny_cfg.train.model_copy(update={"weight_decay": 0.5})
    start = jax.tree.map(lambda p: p + 0.5, tiny_params)  # no all-zero leaf (biases start at 0)
    tx = make_optimizer(cfg)
    state = tx.init(start)
    params = start
    zeros = jax.tree.map(jnp.zeros_like, start)
    n = 4
    step = jax.jit(lambda params, state: tx.update(zeros, state, params))
    for _ in range(n):
        updates, state = step(params, state)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    sched = lr_schedule(cfg)
    factor = float(np.prod([1.0 - float(sched(s)) * cfg.weight_decay for s in range(n)]))
    assert factor < 0.99  # the steps do decay something
    mask, before, after = flat(decay_mask(start)), flat(start), flat(params)
    for path, decayed in mask.items():
        if decayed:
            np.testing.assert_allclose(after[path], before[path] * factor, rtol=1e-5, atol=1e-8, err_msg=path)
            assert float(jnp.linalg.norm(after[path])) < float(jnp.linalg.norm(before[path])), path
        else:
            np.testing.assert_array_equal(after[path], before[path], err_msg=path)
