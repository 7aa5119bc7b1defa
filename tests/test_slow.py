"""Long tests (``python -m pytest -m slow``): every shipped config at full size, and the baseline's
quality bar. The fast suite covers the same properties on tiny shapes."""

from __future__ import annotations

import jax
import pytest

from conftest import ROOT, assert_future_independent
from spiraljax import config, models
from spiraljax.train.loop import train

pytestmark = pytest.mark.slow

AUTOREGRESSIVE = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml") if p.stem != "holographic")


@pytest.mark.parametrize("name", AUTOREGRESSIVE)
def test_every_shipped_config_is_causal(name):
    cfg = config.load(ROOT / "configs" / f"{name}.yaml")
    model = models.build(cfg.model)
    t = cfg.model.seq_len
    tokens = jax.random.randint(jax.random.key(0), (2, t), 0, cfg.model.vocab_size)
    variables = model.init(jax.random.key(1), tokens)
    f = jax.jit(lambda x: model.apply(variables, x)[0])
    assert_future_independent(f, tokens, (0, t // 2 - 1, t - 2), cfg.model.vocab_size, shift=11, atol=1e-5)


def test_transformer_tiny_reaches_the_documented_bpc(tmp_path):
    """README claim: transformer_tiny reaches validation BPC ≤ 2.6 on TinyShakespeare (600 steps)."""
    cfg = config.load(
        ROOT / "configs" / "transformer_tiny.yaml",
        ["train.progress=false", f"data.cache_dir={tmp_path / 'cache'}", "eval.sample_tokens=8"],
    )
    result = train(cfg, tmp_path / "run")
    assert result.val is not None and result.val["bpc"] <= 2.6, result.val
