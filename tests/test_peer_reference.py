"""benchmarks/torch_reference.py and benchmarks/peer.py: the PyTorch reference matches spiraljax's
parameter count and function (torch is the optional ``bench`` extra; skipped without it)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, subprocess_env

BENCH = ROOT / "benchmarks"


def test_peer_without_torch_exits_with_one_line():
    env = subprocess_env()
    env["SPIRALJAX_BENCH_NO_TORCH"] = "1"  # peer.require_torch() treats torch as missing
    out = subprocess.run([sys.executable, str(BENCH / "peer.py"), "--repeats", "1"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == ["benchmarks/peer.py needs PyTorch (benchmark-only extra): "
                                               "pip install -e '.[bench]'"]


def _sides(config_path: str, sets: list[str]):
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(BENCH))
    from peer import silence_ids
    from torch_reference import build_reference, load_flax_params, param_count

    from spiraljax import config
    from spiraljax.models import build

    cfg = config.load(str(ROOT / config_path), sets)
    model = build(cfg.model)
    tokens = np.random.default_rng(0).integers(0, cfg.model.vocab_size, (2, cfg.model.seq_len)).astype(np.int32)
    params = jax.jit(lambda x: model.init(jax.random.key(0), x))(jnp.asarray(tokens))["params"]
    ref = build_reference(cfg.model, silence_ids())
    n_jax = sum(int(x.size) for x in jax.tree.leaves(params))
    return cfg, model, params, ref, tokens, n_jax, param_count(ref), load_flax_params


@pytest.mark.parametrize("config_path", ["configs/transformer_tiny.yaml", "configs/spiralformer_femto.yaml"])
def test_torch_reference_matches_spiraljax(config_path):
    torch = pytest.importorskip("torch", reason="torch is the optional bench extra: pip install -e '.[bench]'")
    cfg, model, params, ref, tokens, n_jax, n_torch, load = _sides(config_path, [])
    assert n_torch == n_jax
    # same weights → same logits (eval mode: the TowerMemory queries at every hold phase on both sides)
    load(ref, params)
    ref.eval()
    with torch.no_grad():
        logits_t, _ = ref(torch.from_numpy(tokens).long())
    assert tuple(logits_t.shape) == (2, cfg.model.seq_len, cfg.model.vocab_size)
    logits_j, _ = model.apply({"params": params}, tokens, train=False)
    np.testing.assert_allclose(logits_t.numpy(), np.asarray(logits_j), atol=2e-4, rtol=2e-4)


def test_torch_train_step_runs():
    torch = pytest.importorskip("torch", reason="torch is the optional bench extra: pip install -e '.[bench]'")
    sys.path.insert(0, str(BENCH))
    from torch_reference import DenseLM, make_torch_step

    from spiraljax import config

    cfg = config.load(str(ROOT / "configs/transformer_tiny.yaml"), ["model.n_layers=1", "model.seq_len=16"])
    step = make_torch_step(DenseLM.from_config(cfg.model), cfg.train)
    x = torch.randint(0, 256, (2, 16))
    first = step({"inputs": x, "targets": x, "mask": torch.ones(2, 16)})
    assert np.isfinite(float(first["loss"])) and float(first["grad_norm"]) > 0
