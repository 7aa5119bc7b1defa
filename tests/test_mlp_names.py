"""One MLP spelling (``…/mlp/{gate,up,down}``, kernels ``[in…, out…]``) with the initial values of
0.1.0's ``mlp_up`` / ``mlp_down`` kept (``MLP(draws_as=…)``), and 0.1.0's checkpoints still read and resumed
(:mod:`spiraljax.old_layout`)."""

from __future__ import annotations

import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, TINY
from spiraljax import config, models, old_layout
from spiraljax.nn.layers import MLP, lora_dense
from spiraljax.runs import load_run
from spiraljax.train.checkpoint import Checkpointer, saved_signature, tree_signature
from spiraljax.train.loop import train
from spiraljax.train.setup import setup


class OldSpelling(nn.Module):
    """0.1.0's GELU MLP: layers of the block named ``mlp_up`` / ``mlp_down``, after another layer."""

    rank: int

    @nn.compact
    def __call__(self, x):
        dense = lora_dense(self.rank)
        x = dense(x.shape[-1], name="before")(x)
        up = dense(8, use_bias=True, name="mlp_up")
        return dense(x.shape[-1], use_bias=True, name="mlp_down")(nn.gelu(up(x)))


class NewSpelling(nn.Module):
    """Today's: the same block with an :class:`MLP` submodule ``mlp``."""

    rank: int
    draws_as: str | None

    @nn.compact
    def __call__(self, x):
        dense = lora_dense(self.rank)
        x = dense(x.shape[-1], name="before")(x)
        return MLP(8, "gelu", dense=dense, use_bias=True, draws_as=self.draws_as, name="mlp")(x)


@pytest.mark.parametrize("rank", [0, 2])
def test_draws_as_keeps_the_old_initial_values(rank):
    """With ``draws_as="mlp_"`` every leaf of ``mlp/{up,down}`` (kernel, bias, LoRA A) is drawn as
    0.1.0's ``mlp_{up,down}`` was, and the outputs agree; without it the kernels differ."""
    x = jax.random.normal(jax.random.key(1), (2, 3, 4))
    old = OldSpelling(rank).init(jax.random.key(0), x)["params"]
    new = NewSpelling(rank, "mlp_").init(jax.random.key(0), x)["params"]
    renamed = old_layout.rename_from_old(old)
    assert jax.tree.structure(renamed) == jax.tree.structure(new)
    for a, b in zip(jax.tree.leaves(renamed), jax.tree.leaves(new)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        OldSpelling(rank).apply({"params": old}, x), NewSpelling(rank, "mlp_").apply({"params": new}, x)
    )
    plain = NewSpelling(rank, None).init(jax.random.key(0), x)["params"]
    assert not np.array_equal(plain["mlp"]["up"]["kernel"], new["mlp"]["up"]["kernel"])


FAMILIES = {
    "transformer": (None, ["model.mlp_kind=gelu"]),
    "transformer_swiglu": (None, []),
    "spiralformer": (ROOT / "configs/spiralformer_femto.yaml", []),
    "hebbian": (ROOT / "configs/hebbian_tiny.yaml", []),
    "kssm": (ROOT / "configs/kssm_v3_tiny.yaml", []),
}  # the holographic memory has no Flax model


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_spells_its_mlp_one_way(name):
    """No ``mlp_`` layer anywhere; every MLP layer is ``…/mlp/{gate,up,down}/kernel`` ``[in, out]``."""
    path, overrides = FAMILIES[name]
    cfg = config.load(path, overrides)
    tokens = jnp.zeros((1, 8), jnp.int32)
    params = jax.eval_shape(lambda: models.build(cfg.model).init(jax.random.key(0), tokens))["params"]
    signature = tree_signature(params, "params")
    assert not old_layout.has_old_names(signature)
    mlp = [p for p in signature if "/mlp/" in p and p.endswith("/kernel")]
    assert all(p.split("/")[-2] in ("gate", "up", "down") and len(signature[p][0]) == 2 for p in mlp)
    assert bool(mlp) == (name in ("transformer", "transformer_swiglu", "spiralformer", "hebbian"))


def test_old_layout_round_trip():
    """to_old → rename_from_old + unflatten_attention is the identity; to_old really renames and
    flattens (the test below would pass vacuously otherwise)."""
    params = {
        "block_0": {
            "attn": {
                "qkv": {"kernel": np.arange(2 * 3 * 2 * 4.0).reshape(2, 3, 2, 4)},
                "out": {"kernel": np.ones((2, 4, 2))},
            },
            "mlp": {"up": {"kernel": np.ones((2, 5))}, "down": {"kernel": np.zeros((5, 2))}},
        },
        "head": {"mlp": {"gate": {"kernel": np.ones(1)}, "up": {"kernel": np.ones(1)}, "down": {"kernel": np.ones(1)}}},
    }
    old = old_layout.to_old(params, True, np.reshape)
    assert set(old["block_0"]) == {"attn", "mlp_up", "mlp_down"} and "mlp" in old["head"]  # SwiGLU: never renamed
    assert old["block_0"]["attn"]["qkv"]["kernel"].shape == (2, 24)
    assert old["block_0"]["attn"]["out"]["kernel"].shape == (8, 2)
    back = old_layout.unflatten_attention(old_layout.rename_from_old(old), n_heads=2)
    jax.tree.map(np.testing.assert_array_equal, back, params)
    assert old_layout.has_old_names(tree_signature(old, "params")) and not old_layout.has_old_names(
        tree_signature(params, "params")
    )


def _cfg():
    return config.load(
        ROOT / "configs/spiralformer_femto.yaml", [*TINY, "train.steps=4", "checkpoint.every=2", "train.eval_every=2"]
    )


def _rewrite_in_old_layout(run, cfg):
    """Replace ``run``'s checkpoints by one step holding the same state in 0.1.0's layout (names and the
    Spiralformer's flat attention kernels); returns that state."""
    ckpt = Checkpointer(run, async_save=False)
    state = ckpt.restore(setup(cfg, mesh=False).init_state())
    meta = {k: v for k, v in ckpt.restored_meta.items() if k not in ("step", "skipped", "rng")}
    ckpt.close()
    shutil.rmtree(run / "checkpoints")
    old = {
        **state,
        **old_layout.to_old({"params": state["params"], "opt_state": state["opt_state"]}, True, jnp.reshape),
    }
    ckpt = Checkpointer(run, async_save=False)
    ckpt.save(old, meta=meta)
    signature = saved_signature(ckpt.mngr, int(state["step"]))
    ckpt.close()
    assert old_layout.has_old_names(signature)
    assert any(p.endswith("attn/qkv/kernel") and len(shape) == 2 for p, (shape, _) in signature.items())
    return state


def test_a_checkpoint_in_the_old_layout_is_read_and_resumed_exactly(tmp_path):
    """A Spiralformer run stopped at step 2, its checkpoint rewritten in 0.1.0's layout: ``load_run``
    gives today's tree with the same values, and resuming ends with the params of an uninterrupted run."""
    cfg = _cfg()
    train(cfg, tmp_path / "straight")
    run = tmp_path / "old"
    train(cfg, run, stop_at=2)
    state = _rewrite_in_old_layout(run, cfg)
    _, variables, step = load_run(run, "latest", return_step=True)
    assert step == 2
    jax.tree.map(np.testing.assert_array_equal, variables["params"], jax.device_get(state["params"]))
    assert train(cfg, run, resume=True).step == 4
    resumed, straight = load_run(run, "latest")[1], load_run(tmp_path / "straight", "latest")[1]
    jax.tree.map(np.testing.assert_array_equal, resumed, straight)
