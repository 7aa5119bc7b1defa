"""Hebbian LM carried state (docs/carried_state.md) for every write rule: two carried windows equal one
window of twice the length (fast weights, attention history across the boundary, head context,
positions), initial_state = state=None, a reset row is a fresh start, causality with a state, the scan
and chunked memories carry the same, and streaming generation runs on the same state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_future_independent
from spiraljax import config, models
from spiraljax.state import check_state, reset_rows

ROOT = config.PROJECT_ROOT
T = 16  # one window: 4 patches of 4 bytes; window 4 patches, so the attention history spans the boundary
RULES = ("hebbian", "shifted", "delta")


def _build(rule, *extra):
    cfg = config.load(
        ROOT / "configs" / "hebbian_tiny.yaml", [f"model.memory_rule={rule}", "model.shift_kernel=3", *extra]
    )
    return models.build(cfg.model)


@pytest.fixture(scope="module", params=RULES)
def setup(request):
    rule = request.param
    model = _build(rule)
    tokens = jax.random.randint(jax.random.key(0), (2, 2 * T), 0, 256)
    variables = model.init(jax.random.key(1), tokens[:, :T])
    step = 30  # α = 0.99, the curriculum's last stage
    run = jax.jit(lambda t, s: model.apply(variables, t, step=step, state=s))
    fresh = jax.jit(lambda t: model.apply(variables, t, step=step)[0])
    s0 = model.initial_state(2)
    w1, aux1 = run(tokens[:, :T], s0)
    return {
        "rule": rule,
        "model": model,
        "variables": variables,
        "tokens": tokens,
        "run": run,
        "fresh": fresh,
        "s0": s0,
        "w1": w1,
        "s1": aux1["state"],
        "step": step,
    }


def test_initial_state_layout_is_batch_first(setup):
    s0, model = setup["s0"], setup["model"]
    check_state(s0, 2)
    cfg = model.cfg
    hd = cfg.d_model // cfg.n_heads
    want = {
        "memory": (2, cfg.n_layers, cfg.n_heads, hd, hd if setup["rule"] == "delta" else hd + 1),
        "history": (2, cfg.n_layers, cfg.window - 1, cfg.d_model),
        "valid": (2, cfg.window - 1),
        "pos": (2,),
        "latent": (2, cfg.d_model),
        "started": (2,),
    }
    if setup["rule"] == "shifted":
        want["keys"] = (2, cfg.n_layers, cfg.shift_kernel - 1, cfg.n_heads, hd)
    assert {k: v.shape for k, v in s0.items()} == want
    assert s0["pos"].dtype == jnp.int32 and s0["started"].dtype == bool and s0["valid"].dtype == bool
    # the output state has the input's structure, shapes and dtypes (a jitted step can carry it)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), setup["s1"]) == jax.tree.map(lambda a: (a.shape, a.dtype), s0)


def test_initial_state_equals_no_state(setup):
    np.testing.assert_allclose(setup["w1"], setup["fresh"](setup["tokens"][:, :T]), atol=1e-5)
    _, aux = setup["model"].apply(setup["variables"], setup["tokens"][:, :T])
    assert "state" not in aux


def test_two_carried_windows_equal_one_window_of_twice_the_length(setup):
    run, tokens = setup["run"], setup["tokens"]
    w2, aux2 = run(tokens[:, T:], setup["s1"])
    full, aux_full = run(tokens, setup["s0"])
    np.testing.assert_allclose(np.concatenate([setup["w1"], w2], 1), full, atol=1e-4)
    np.testing.assert_allclose(np.concatenate([setup["w1"], w2], 1), setup["fresh"](tokens), atol=1e-4)
    for key, carried in aux2["state"].items():  # memory, attention history, positions, last latent, keys
        np.testing.assert_allclose(carried, aux_full["state"][key], atol=1e-4, err_msg=key)
    assert (aux2["state"]["pos"] == 2 * T // 4).all() and aux2["state"]["started"].all()
    # streaming generation's advance runs on the same state: same latent and state as the full pass
    model, variables = setup["model"], setup["variables"]
    latent, cache = jax.jit(lambda t, c: model.apply(variables, t, c, setup["step"], method="advance"))(
        tokens[:, T:], setup["s1"]
    )
    np.testing.assert_allclose(latent, aux2["state"]["latent"], atol=1e-5)
    for key in cache:
        np.testing.assert_allclose(cache[key], aux2["state"][key], atol=1e-5, err_msg=key)


def test_carried_state_matters(setup):
    """The second window with the first one's state differs from a fresh start (the test above can fail)."""
    w2 = setup["run"](setup["tokens"][:, T:], setup["s1"])[0]
    assert not np.allclose(w2, setup["fresh"](setup["tokens"][:, T:]), atol=1e-3)


def test_reset_row_is_a_fresh_start(setup):
    run, tokens = setup["run"], setup["tokens"]
    state = reset_rows(setup["s1"], setup["s0"], jnp.array([True, False]))
    w2 = run(tokens[:, T:], state)[0]
    np.testing.assert_allclose(w2[0], setup["fresh"](tokens[:, T:])[0], atol=1e-5)
    np.testing.assert_allclose(w2[1], run(tokens[:, T:], setup["s1"])[0][1], atol=1e-6)


def test_future_tokens_never_change_past_logits_with_a_state(setup):
    run = setup["run"]
    window = setup["tokens"][:, T:]
    assert_future_independent(lambda t: run(t, setup["s1"])[0], window, range(0, T - 1, 3), 256, shift=5)
    assert_future_independent(setup["fresh"], window, range(1, T - 1, 3), 256, shift=5)


def test_scan_and_chunked_memories_carry_the_same(setup):
    scan = _build(setup["rule"], "model.memory_impl=scan")
    run = jax.jit(lambda t, s: scan.apply(setup["variables"], t, step=setup["step"], state=s))
    w1, aux1 = run(setup["tokens"][:, :T], setup["s0"])
    w2, aux2 = run(setup["tokens"][:, T:], aux1["state"])
    c2, caux2 = setup["run"](setup["tokens"][:, T:], setup["s1"])
    np.testing.assert_allclose(w1, setup["w1"], atol=1e-4)
    np.testing.assert_allclose(w2, c2, atol=1e-4)
    for key in caux2["state"]:
        np.testing.assert_allclose(aux2["state"][key], caux2["state"][key], atol=1e-4, err_msg=key)


def test_a_state_of_another_batch_size_is_a_one_line_error(setup):
    with pytest.raises(ValueError, match=r"hebbian_lm state\['history'\]: every state leaf must be batch-first"):
        setup["model"].apply(setup["variables"], setup["tokens"][:1, :T], state=setup["s0"])


def test_blocked_window_attention_equals_the_dense_masked_form(monkeypatch):
    """The sliding-window attention of the hybrid blocks at ≥ 128 patches runs blocked (O(S·w)): the model's
    logits and gradients, and two carried windows (history before the keys), equal the dense masked
    reference; future bytes never change past logits there either."""
    from functools import partial

    from spiraljax.nn import hebbian as layers
    from spiraljax.ops.attention import local_attention
    from spiraljax.ops.impl import Impl, resolve

    t = 512  # 128 patches of 4 bytes, window 4: blocked from the first window on (CPU rule: S ≥ 128)
    assert resolve("local_attention", length=t // 4, window=4, platform="cpu") is Impl.BLOCKED
    model = _build("hebbian", f"model.seq_len={t}")
    tokens = jax.random.randint(jax.random.key(2), (1, 2 * t), 0, 256)
    variables = model.init(jax.random.key(1), tokens[:, :t])

    def outputs():
        def loss(v):
            logits = model.apply(v, tokens[:, :t], step=30)[0]
            return jnp.mean(jax.nn.log_softmax(logits)[..., 0]), logits

        (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables)
        run = jax.jit(lambda x, s: model.apply(variables, x, step=30, state=s))
        w1, aux1 = run(tokens[:, :t], model.initial_state(1))
        return logits, grads, run(tokens[:, t:], aux1["state"])[0], run

    blocked_logits, blocked_grads, blocked_w2, run = outputs()
    with monkeypatch.context() as patch:
        patch.setattr(layers, "local_attention", partial(local_attention, impl="dense"))
        dense_logits, dense_grads, dense_w2, _ = outputs()
    np.testing.assert_allclose(blocked_logits, dense_logits, atol=1e-5)
    np.testing.assert_allclose(blocked_w2, dense_w2, atol=1e-5)
    for got, want in zip(jax.tree.leaves(blocked_grads), jax.tree.leaves(dense_grads)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    assert_future_independent(lambda x: run(x, model.initial_state(1))[0], tokens[:, :t], (100, 301), 256, shift=5)
