"""Induction task: the data is what it claims, and the shipped dense baseline forms an induction head
in a short run — which it does not without smeared keys (the previous attention layers)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spiraljax import config, models
from spiraljax.data.base import build_dataset
from spiraljax.data.induction import induction_batch
from spiraljax.train.optim import make_optimizer
from spiraljax.train.step import init_state, make_train_step


def test_induction_batches_are_deterministic_and_mask_only_copyable_tokens():
    a = induction_batch(3, 7, 16, 64, 8, 19, 256)
    b = induction_batch(3, 7, 16, 64, 8, 19, 256)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(induction_batch(3, 8, 16, 64, 8, 19, 256)["inputs"], a["inputs"])
    distances = set()
    for inp, tgt, mask in zip(a["inputs"], a["targets"], a["mask"]):
        seq = np.concatenate([inp, tgt[-1:]])
        pos = np.flatnonzero(mask)
        assert 7 <= len(pos) <= 18 and np.all(np.diff(pos) == 1)  # one run: second copy minus its first token
        seg_len, start = len(pos) + 1, pos[0]
        found = [
            s for s in range(start - seg_len + 1) if np.array_equal(seq[s : s + seg_len], seq[start : start + seg_len])
        ]
        assert found  # the masked run repeats an earlier segment
        distances.add(start - found[0])
        np.testing.assert_array_equal(tgt[pos], seq[found[0] + 1 : found[0] + seg_len])
    assert len(distances) > 5  # no fixed positional shift solves it


def masked_accuracy(apply_fn, batches) -> float:
    """Fraction of masked targets where ``argmax apply_fn(inputs)`` equals the target."""
    hits = total = 0.0
    for b in batches:
        pred = np.asarray(jnp.argmax(apply_fn(jnp.asarray(b["inputs"])), axis=-1))
        hits += float(np.sum((pred == b["targets"]) * b["mask"]))
        total += float(np.sum(b["mask"]))
    return hits / max(total, 1.0)


def _train_copy_accuracy(overrides: list[str], steps: int) -> float:
    cfg = config.load(
        None,
        [
            "data.source=induction",
            "model.seq_len=64",
            "model.d_model=32",
            "model.n_layers=2",
            "model.n_heads=2",
            "train.batch_size=16",
            "train.lr=1e-2",
            f"train.steps={steps}",
            "train.warmup_steps=20",
        ]
        + overrides,
    )
    model, data = models.build(cfg.model), build_dataset(cfg)
    tx = make_optimizer(cfg.train)
    state = init_state(model, tx, jnp.asarray(data.train_batch(0)["inputs"]), cfg.train.seed)
    step = jax.jit(make_train_step(model, tx), donate_argnums=0)
    for s in range(steps):
        state, _ = step(state, {k: jnp.asarray(v) for k, v in data.train_batch(s).items()})
    apply = jax.jit(lambda t: model.apply({"params": state["params"]}, t)[0])
    return masked_accuracy(apply, [data.batch(i, 64, stream_offset=777) for i in range(2)])


@pytest.mark.parametrize("smear,bound", [(True, 0.7), (False, 0.1)])
def test_baseline_forms_an_induction_head_in_200_steps_only_with_smeared_keys(smear, bound):
    """Shipped baseline (SwiGLU, tied, RoPE; d 32, 2 layers) copies ≥ 0.7 of the repeated tokens after
    200 steps (measured 0.83–0.92 over seeds 0–3); with plain keys it stays at chance (0.01)."""
    acc = _train_copy_accuracy([f"model.smear_keys={smear}"], 200)
    assert (acc >= bound) if smear else (acc < bound), acc
