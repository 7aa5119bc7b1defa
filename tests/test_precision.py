"""model.dtype (bfloat16 activations, float32 parameters) and model.remat (per-block rematerialisation) for
every trainable family (spiraljax.nn.precision).

Cheap checks trace only (``jax.eval_shape`` / ``jax.make_jaxpr``, no compilation) and run for every
family; the numeric ones compile three gradient functions per family and are marked slow, except for
the dense baseline.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from spiraljax import config
from spiraljax.errors import ConfigError
from spiraljax.train.step import loss_fn

# tiny shapes (compile time dominates); dropout / phase noise on, so remat must replay the same random draws
TINY = {
    "transformer": [
        "model.d_model=16",
        "model.n_layers=2",
        "model.n_heads=2",
        "model.vocab_size=32",
        "model.seq_len=8",
        "model.dropout=0.1",
    ],
    "spiralformer": [
        "model.d_model=16",
        "model.n_layers=2",
        "model.n_heads=2",
        "model.seq_len=16",
        "model.breath.dropout=[0.1,0.1,0.1,0.0]",
    ],
    "kssm_v1": [
        "model.d_model=16",
        "model.n_oscillators=16",
        "model.n_harmonics=3",
        "model.readout_hidden=16",
        "model.vocab_size=32",
        "model.seq_len=8",
        "model.noise=0.01",
    ],
    "kssm_v2": [
        "model.d_model=16",
        "model.n_layers=2",
        "model.n_oscillators=16",
        "model.n_harmonics=3",
        "model.readout_hidden=16",
        "model.vocab_size=32",
        "model.seq_len=8",
    ],
    "kssm_v3": [
        "model.d_model=16",
        "model.n_layers=2",
        "model.n_oscillators=16",
        "model.n_harmonics=3",
        "model.n_groups=2",
        "model.readout_hidden=16",
        "model.vocab_size=32",
        "model.seq_len=8",
    ],
    "hebbian_lm": [
        "model.d_model=16",
        "model.n_layers=2",
        "model.n_heads=2",
        "model.window=2",
        "model.head_hidden=8",
        "model.memory_chunk=2",
        "model.seq_len=8",
        "model.reasoning_steps=1",
        "model.dropout=0.1",
    ],
}
SLOW = pytest.mark.slow


def trainable_families() -> list[str]:
    """Every family of the package that builds a Flax model (all but holographic; families that other
    tests register in the same process are not the package's)."""
    out = []
    for name, cls in config.ModelConfig.registered().items():
        if not cls.__module__.startswith("spiraljax.models."):
            continue
        try:
            cls().build()
        except ConfigError:
            continue
        out.append(name)
    return out


def model_cfg(family: str, dtype: str = "float32", remat: bool = False):
    return config.load(
        None, [f"model.family={family}", *TINY[family], f"model.dtype={dtype}", f"model.remat={str(remat).lower()}"]
    ).model


def batch_for(cfg) -> dict:
    tokens = jax.random.randint(jax.random.key(1), (2, cfg.seq_len), 1, min(cfg.vocab_size, 256))
    return {"inputs": tokens, "targets": jnp.roll(tokens, -1, axis=1), "mask": jnp.ones_like(tokens)}


def grad_fn(cfg):
    """``params -> ((loss, (ce, metrics)), grads)`` in training mode (dropout, noise, memory coin on)."""
    model, batch = cfg.build(), batch_for(cfg)

    def f(params):
        return jax.value_and_grad(loss_fn, has_aux=True)(params, model, batch, jnp.int32(3), jax.random.key(2))

    return f


def init_params(cfg, abstract: bool = False):
    model, tokens = cfg.build(), batch_for(cfg)["inputs"]

    def init():
        return model.init(jax.random.key(0), tokens)["params"]

    return jax.eval_shape(init) if abstract else jax.jit(init)()


def test_every_trainable_family_is_covered():
    assert set(trainable_families()) == set(TINY)


@pytest.mark.parametrize("family", sorted(TINY))
def test_dtype_and_remat_are_fields_of_every_trainable_family(family):
    cfg = config.load(None, [f"model.family={family}", "model.dtype=bfloat16", "model.remat=true"]).model
    assert (cfg.dtype, cfg.remat) == ("bfloat16", True)
    default = config.load(None, [f"model.family={family}"]).model
    assert (default.dtype, default.remat) == ("float32", False)
    assert config.field_description(type(cfg), "remat") and config.field_description(type(cfg), "dtype")


def test_holographic_has_no_dtype():
    with pytest.raises(ConfigError, match="unknown key model.dtype for model.family holographic"):
        config.load(None, ["model.family=holographic", "model.dtype=bfloat16"])


@pytest.mark.parametrize("family", sorted(TINY))
def test_bfloat16_computes_in_bfloat16_with_float32_parameters_gradients_and_logits(family):
    """Traced only: parameters and gradients are float32, the jaxpr has bfloat16 matmuls, logits are
    float32; remat puts a checkpoint in the gradient and leaves the parameter tree as it is."""
    cfg = model_cfg(family, "bfloat16")
    params = init_params(cfg, abstract=True)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    (loss, _), grads = jax.eval_shape(grad_fn(cfg), params)
    assert loss.dtype == jnp.float32
    assert {x.dtype for x in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
    jaxpr = str(jax.make_jaxpr(grad_fn(cfg))(params))
    assert "bf16" in jaxpr and "remat" not in jaxpr
    model, tokens = cfg.build(), batch_for(cfg)["inputs"]
    logits, _ = jax.eval_shape(lambda p: model.apply({"params": p}, tokens), params)
    assert logits.dtype == jnp.float32

    fp32 = model_cfg(family, "float32")
    assert "bf16" not in str(jax.make_jaxpr(grad_fn(fp32))(init_params(fp32, abstract=True)))
    remat = model_cfg(family, "float32", remat=True)
    assert jax.tree.structure(init_params(remat, abstract=True)) == jax.tree.structure(params)
    assert "remat" in str(jax.make_jaxpr(grad_fn(remat))(params))


def test_sensitive_state_stays_float32_under_bfloat16():
    """K-SSM's R and the Hebbian fast-weight state are float32 under bfloat16 (traced)."""
    for family, keys in (("kssm_v3", ("R", "R_readout", "u")), ("hebbian_lm", ("decay",))):
        cfg = model_cfg(family, "bfloat16")
        model, tokens = cfg.build(), batch_for(cfg)["inputs"]
        _, aux = jax.eval_shape(lambda p: model.apply({"params": p}, tokens), init_params(cfg, abstract=True))
        for key in keys:
            assert aux[key].dtype == jnp.float32, (family, key)
        if family == "hebbian_lm":
            assert {s.dtype for s in aux["memory_state"]} == {jnp.dtype(jnp.float32)}


def _numerics(family):
    """Gradients with remat equal those without (tight); the bfloat16 loss at init is close to float32 (loose)."""
    cfg = model_cfg(family)
    params = init_params(cfg)
    (loss, (ce, _)), grads = jax.jit(grad_fn(cfg))(params)
    (loss_r, (ce_r, _)), grads_r = jax.jit(grad_fn(model_cfg(family, remat=True)))(params)
    assert float(loss_r) == pytest.approx(float(loss), rel=1e-6)
    for g, g_r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_r)):
        assert jnp.allclose(g_r, g, rtol=1e-5, atol=1e-7 * (1.0 + float(jnp.max(jnp.abs(g))))), family
    (loss_b, (ce_b, _)), grads_b = jax.jit(grad_fn(model_cfg(family, "bfloat16")))(params)
    assert abs(float(ce_b) - float(ce)) < 0.01 * float(ce), (family, float(ce_b), float(ce))
    assert {g.dtype for g in jax.tree.leaves(grads_b)} == {jnp.dtype(jnp.float32)}
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads_b))


def test_remat_gradients_and_bfloat16_loss_transformer():
    _numerics("transformer")


@SLOW
@pytest.mark.parametrize("family", sorted(set(TINY) - {"transformer"}))
def test_remat_gradients_and_bfloat16_loss(family):
    _numerics(family)
