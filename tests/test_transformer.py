import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_future_independent
from spiraljax import config, models
from spiraljax.ops.attention import causal_attention, masked_attention


@pytest.mark.parametrize("smear", [False, True])
def test_future_tokens_do_not_change_past_logits(smear):
    cfg = config.load(
        None,
        ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.seq_len=24", f"model.smear_keys={smear}"],
    )
    model = models.build(cfg.model)
    tokens = jax.random.randint(jax.random.key(1), (2, 24), 0, 256)
    variables = model.init(jax.random.key(0), tokens)
    apply = jax.jit(lambda t: model.apply(variables, t)[0])
    assert_future_independent(apply, tokens, (0, 7, 22), 256, shift=17, atol=1e-6)


def test_smeared_keys_mix_each_key_with_the_previous_one():
    from spiraljax.nn.layers import smear_keys

    k = jax.random.normal(jax.random.key(0), (2, 5, 3, 4))
    mix = jnp.array([1.0, 0.0, 0.25])
    out = np.asarray(smear_keys(k, mix))
    k = np.asarray(k)
    np.testing.assert_allclose(out[:, :, 0], k[:, :, 0], atol=1e-6)  # m = 1: unchanged
    np.testing.assert_allclose(out[:, 1:, 1], k[:, :-1, 1], atol=1e-6)  # m = 0: previous key
    np.testing.assert_allclose(out[:, 0, 1], 0.0, atol=1e-6)  # nothing before t = 0
    np.testing.assert_allclose(out[:, 1:, 2], 0.25 * k[:, 1:, 2] + 0.75 * k[:, :-1, 2], atol=1e-6)


def test_attention_rows_without_keys_are_zero_not_nan():
    q = k = v = jnp.ones((1, 4, 1, 8))
    mask = jnp.zeros((4, 4), bool).at[1, 0].set(True)
    out = masked_attention(q, k, v, mask)
    assert np.isfinite(out).all() and float(jnp.abs(out[0, 0]).sum()) == 0.0


def test_sliding_window_matches_explicit_mask():
    q, k, v = (jax.random.normal(jax.random.key(i), (1, 10, 2, 4)) for i in range(3))
    out = causal_attention(q, k, v, window=3)
    ref = np.zeros((1, 10, 2, 4))
    qn, kn, vn = map(np.asarray, (q, k, v))
    for i in range(10):
        js = list(range(max(0, i - 2), i + 1))
        s = np.einsum("hd,jhd->hj", qn[0, i], kn[0, js]) / 2.0
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        ref[0, i] = np.einsum("hj,jhd->hd", w, vn[0, js])
    np.testing.assert_allclose(out, ref, atol=1e-5)


def expected_parameter_count(
    v: int, d: int, n_layers: int, n_heads: int, mlp_kind: str, tie: bool, smear: bool = True
) -> int:
    """Embedding V·d; per block: 2 LayerNorms (2·2d), qkv 3d², out d², one smear logit per head, MLP
    (SwiGLU gate/up/down 3·d·h with h = ⌊4d·2/3⌋, GELU up/down 2·d·4d); final LayerNorm 2d; untied head d·V."""
    mlp = 3 * d * int(4 * d * 2 / 3) if mlp_kind == "swiglu" else 2 * d * 4 * d
    block = 2 * 2 * d + 3 * d * d + d * d + (n_heads if smear else 0) + mlp
    return v * d + n_layers * block + 2 * d + (0 if tie else d * v)


@pytest.mark.parametrize(
    "tie,mlp_kind,smear",
    [(True, "swiglu", True), (False, "swiglu", True), (True, "gelu", True), (True, "swiglu", False)],
)
def test_parameter_count_and_shapes(tie, mlp_kind, smear):
    cfg = config.load(
        None,
        [
            "model.d_model=64",
            "model.n_layers=2",
            f"model.tie_embeddings={tie}",
            f"model.mlp_kind={mlp_kind}",
            f"model.smear_keys={smear}",
        ],
    )
    model = models.build(cfg.model)
    tokens = jnp.zeros((2, cfg.model.seq_len), jnp.int32)
    variables = model.init(jax.random.key(0), tokens)
    logits, aux = model.apply(variables, tokens)
    assert logits.shape == (2, cfg.model.seq_len, 256) and logits.dtype == jnp.float32 and aux == {}
    n = sum(x.size for x in jax.tree.leaves(variables))
    assert ("head" in variables["params"]) == (not tie)
    assert n == expected_parameter_count(256, 64, 2, cfg.model.n_heads, mlp_kind, tie, smear)
