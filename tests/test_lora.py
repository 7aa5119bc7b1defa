"""LoRA on the shared attention / MLP stack: LoRADense is Dense/DenseGeneral at rank 0, merge/unmerge are
inverse, and the dense baseline and the Hebbian model train adapters with frozen bases."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import assert_future_independent
from spiraljax import config, models
from spiraljax.nn.lora import LoRADense, as_matrix_product, contract_reference, merge_lora, unmerge_lora
from spiraljax.train.optim import make_optimizer

ROOT = config.PROJECT_ROOT
SMALL = ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.seq_len=24"]


@pytest.mark.parametrize(
    "x_shape, n_axes, out_shape",
    [
        ((4, 6, 8), 1, (5,)),  # [B, T, d] → [B, T, out]: an MLP or head
        ((4, 6, 8), 1, (3, 2, 4)),  # → [B, T, 3, H, D]: the qkv projection
        ((4, 6, 2, 4), 2, (8,)),  # [B, T, H, D] → [B, T, d]: the output projection
        ((8,), 1, (5,)),  # no leading axis
    ],
)
def test_matrix_product_matches_dot_general(x_shape, n_axes, out_shape):
    """The 2-D fast path gives the reference contraction's values and gradients (x and W), with W
    stored [in…, out…] or flat."""
    kx, kw = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, x_shape)
    w = jax.random.normal(kw, x_shape[len(x_shape) - n_axes :] + out_shape)
    flat_w = w.reshape(-1, int(np.prod(out_shape)))

    def loss(f):
        return lambda x, w: jnp.sum(jnp.sin(f(x, w)))

    fast = jax.value_and_grad(loss(lambda x, w: as_matrix_product(x, w, n_axes, out_shape)), argnums=(0, 1))
    ref = jax.value_and_grad(loss(lambda x, w: contract_reference(x, w, n_axes)), argnums=(0, 1))
    (v_fast, (gx, gw)), (v_ref, (rx, rw)) = fast(x, w), ref(x, w)
    y = as_matrix_product(x, flat_w, n_axes, out_shape)
    assert y.shape == x_shape[: len(x_shape) - n_axes] + out_shape
    np.testing.assert_allclose(y, contract_reference(x, w, n_axes), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v_fast, v_ref, rtol=1e-5)
    np.testing.assert_allclose(gx, rx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gw, rw, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(gw).max()) > 0.1  # the gradient is not trivially zero


@pytest.mark.parametrize(
    "flax_layer, ours, x_shape",
    [
        (nn.Dense(12, use_bias=False), LoRADense(12), (2, 5, 8)),
        (nn.Dense(12), LoRADense(12, use_bias=True), (2, 5, 8)),
        (nn.DenseGeneral((3, 2, 4), use_bias=False), LoRADense((3, 2, 4)), (2, 5, 8)),
        (nn.DenseGeneral(8, axis=(-2, -1), use_bias=False), LoRADense(8, axis=(-2, -1)), (2, 5, 2, 4)),
    ],
)
def test_rank_zero_is_flax_dense(flax_layer, ours, x_shape):
    """Same parameter names, shapes and initial values as the Flax layer, same outputs."""
    x = jax.random.normal(jax.random.key(1), x_shape)
    ref, got = flax_layer.init(jax.random.key(0), x), ours.init(jax.random.key(0), x)
    assert jax.tree.structure(ref) == jax.tree.structure(got)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(flax_layer.apply(ref, x), ours.apply(got, x))


def _with_adapters(params, value: float = 0.05):
    """Every ``lora_b`` set to a non-zero value, as after some training."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: x + value if "lora_b" in jax.tree_util.keystr(p) else x, params
    )


def _strip_adapters(params):
    return {
        k: _strip_adapters(v) if isinstance(v, dict) else v for k, v in params.items() if k not in ("lora_a", "lora_b")
    }


@pytest.mark.parametrize(
    "path, overrides",
    [
        (None, SMALL),  # dense baseline, swiglu, tied
        (None, SMALL + ["model.mlp_kind=gelu", "model.tie_embeddings=false", "model.window=6"]),
        (ROOT / "configs" / "hebbian_tiny.yaml", []),  # DenseGeneral-shaped kernels
    ],
)
def test_adapters_start_at_the_base_and_merge_exactly(path, overrides):
    """B = 0 at init: the LoRA model is the base model. Merged adapters give the unmerged logits, and
    unmerge_lora(merge_lora(p)) = p."""
    base_cfg = config.load(path, overrides)
    lora_cfg = config.load(path, overrides + ["model.lora_rank=4"])
    base, lora = models.build(base_cfg.model), models.build(lora_cfg.model)
    tokens = jax.random.randint(jax.random.key(5), (2, base_cfg.model.seq_len), 0, 256)
    params = lora.init(jax.random.key(0), tokens)["params"]
    assert any("lora_a" in jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params))
    base_params = base.init(jax.random.key(0), tokens)["params"]
    assert jax.tree.structure(_strip_adapters(params)) == jax.tree.structure(base_params)
    for a, b in zip(jax.tree.leaves(_strip_adapters(params)), jax.tree.leaves(base_params)):
        np.testing.assert_array_equal(a, b)  # same base draw
    np.testing.assert_allclose(
        lora.apply({"params": params}, tokens)[0], base.apply({"params": base_params}, tokens)[0], atol=1e-6
    )

    trained = _with_adapters(params)
    out = lora.apply({"params": trained}, tokens)[0]
    assert not np.allclose(out, base.apply({"params": base_params}, tokens)[0], atol=1e-4)
    scale = lora_cfg.model.lora_alpha / lora_cfg.model.lora_rank
    merged, saved = merge_lora(trained, scale)
    assert all(
        float(jnp.abs(x).max()) == 0
        for p, x in jax.tree_util.tree_leaves_with_path(merged)
        if "lora_b" in jax.tree_util.keystr(p)
    )
    np.testing.assert_allclose(lora.apply({"params": merged}, tokens)[0], out, atol=1e-4)
    np.testing.assert_allclose(base.apply({"params": _strip_adapters(merged)}, tokens)[0], out, atol=1e-4)
    back = unmerge_lora(merged, saved, scale)
    assert jax.tree.structure(back) == jax.tree.structure(trained)
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(trained)):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_baseline_lora_stays_causal():
    cfg = config.load(None, SMALL + ["model.lora_rank=2"])
    model = models.build(cfg.model)
    tokens = jax.random.randint(jax.random.key(1), (2, 24), 0, 256)
    params = _with_adapters(model.init(jax.random.key(0), tokens)["params"], 0.1)
    apply = jax.jit(lambda t: model.apply({"params": params}, t)[0])
    assert_future_independent(apply, tokens, (0, 7, 22), 256, shift=17, atol=1e-6)


@pytest.mark.parametrize("path, overrides", [(None, SMALL), (ROOT / "configs" / "hebbian_tiny.yaml", [])])
def test_lora_training_moves_only_adapters_and_lowers_the_loss(path, overrides):
    """``train.trainable=lora``: every base leaf stays bit-identical, the adapters change, the loss falls."""
    cfg = config.load(
        path,
        overrides
        + ["model.lora_rank=4", "train.trainable=lora", "train.warmup_steps=0", "train.lr=1e-2", "train.steps=10"],
    )
    model = models.build(cfg.model)
    tokens = jax.random.randint(jax.random.key(1), (4, cfg.model.seq_len + 1), 0, 256)
    x, y = tokens[:, :-1], tokens[:, 1:]
    params = model.init(jax.random.key(0), x)["params"]
    tx = make_optimizer(cfg.train)

    def loss_fn(p):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x)[0], y).mean()

    @jax.jit
    def step(p, state):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, state = tx.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    state, new, losses = tx.init(params), params, []
    for _ in range(8):
        new, state, loss = step(new, state)
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.05, losses
    for (path_, before), after in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(new)):
        moved = not np.array_equal(before, after)
        assert moved == ("lora" in jax.tree_util.keystr(path_)), jax.tree_util.keystr(path_)
