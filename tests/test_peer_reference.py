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
    out = subprocess.run(
        [sys.executable, str(BENCH / "peer.py"), "--repeats", "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "benchmarks/peer.py needs PyTorch (benchmark-only extra): pip install -e '.[bench]'"
    ]


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


# --------------------------------------------------------------------------- rows against the originals
# The original programs are not in the repository (benchmarks take their folder as an argument): these
# tests look for them beside the checkout (../shared/peers or ../../shared/peers) and skip without them.
PEERS = next(
    (
        p
        for p in (ROOT.parent / "shared" / "peers", ROOT.parent.parent / "shared" / "peers")
        if (p / "README.md").is_file()
    ),
    None,
)
needs_peers = pytest.mark.skipif(
    PEERS is None, reason="the original programs (shared/peers) are not beside this checkout"
)


def _peer_module():
    sys.path.insert(0, str(BENCH))
    import peer

    return peer


def test_peer_skips_rows_without_their_source_folder():
    from argparse import Namespace

    peer = _peer_module()
    args = Namespace(agiformer_src=None, spiralformer_src="somewhere", nanogpt_src=None)
    todo, lines = peer.selected(peer.WORKLOADS, None, args)
    names = [w.name for w in todo]
    assert all(w.needs in (None, "spiralformer") for w in todo)
    assert any(w.needs == "spiralformer" for w in todo) and "dense baseline b32 T128" in names
    assert len(lines) == 2 and lines[0].startswith("skipped (no --agiformer-src PATH): Hebbian LM vs AGIFORMER d256")
    assert lines[1].startswith("skipped (no --nanogpt-src PATH): dense baseline vs nanoGPT")
    todo, lines = peer.selected(peer.WORKLOADS, ["AGIFORMER"], args)  # --only narrows first
    assert todo == [] and len(lines) == 1


def test_peer_wrong_source_folder_is_one_line(tmp_path):
    pytest.importorskip("torch", reason="torch is the optional bench extra: pip install -e '.[bench]'")
    out = subprocess.run(
        [sys.executable, str(BENCH / "peer.py"), "--only", "nanoGPT", "--nanogpt-src", str(tmp_path)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"benchmarks/peer.py: --nanogpt-src {tmp_path}: no model.py in that "
        "folder (expected the original nanogpt sources)"
    ]


def test_count_params_counts_tied_weights_once():
    torch = pytest.importorskip("torch", reason="torch is the optional bench extra: pip install -e '.[bench]'")
    sys.path.insert(0, str(BENCH))
    from originals import count_params

    emb, head = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight  # tied, as nanoGPT's wte / lm_head
    model = torch.nn.ModuleDict({"emb": emb, "head": head, "ln": torch.nn.LayerNorm(4)})
    assert count_params(model) == 10 * 4 + 2 * 4


@needs_peers
def test_nanogpt_original_param_count_and_step():
    torch = pytest.importorskip("torch", reason="torch is the optional bench extra: pip install -e '.[bench]'")
    peer = _peer_module()
    import originals

    d, n_layer, vocab, block = 128, 4, 256, 128  # the benchmark's shape, bias-free: 12 d² per block + wte + wpe + LNs
    model = originals.nanogpt_model(PEERS / "nanogpt", **peer.NANOGPT_SHAPE)
    assert originals.count_params(model) == n_layer * 12 * d * d + vocab * d + block * d + (2 * n_layer + 1) * d
    x = torch.randint(0, 256, (2, 16))
    step, n = originals.nanogpt_step(
        PEERS / "nanogpt", x, x, vocab_size=256, block_size=16, n_layer=1, n_head=2, n_embd=16
    )
    losses = [step() for _ in range(3)]
    assert n > 0 and all(np.isfinite(losses)) and losses[-1] < losses[0]


@needs_peers
def test_agiformer_and_spiralformer_original_steps_run():
    torch = pytest.importorskip("torch", reason="torch is the optional bench extra: pip install -e '.[bench]'")
    _peer_module()
    import originals

    x = torch.randint(0, 256, (1, 64))
    step, n = originals.agiformer_step(PEERS / "agiformer", x, x, d_model=32, n_layers=1, n_heads=2, window=4)
    assert n > 0 and np.isfinite(step())
    tokens = torch.randint(1, 60, (2, 32))
    step, n = originals.spiralformer_step(PEERS / "spiralformer", tokens, tokens, torch.rand(2, 5))
    assert n > 0 and np.isfinite(step())
    with pytest.raises(originals.ConfigError, match="not an inhale phase"):
        originals.spiralformer_step(PEERS / "spiralformer", tokens, tokens, torch.rand(2, 5), t=5.0)


@needs_peers
def test_port_in_nanogpt_configuration_computes_nanogpts_function():
    """The port check times like against like: DenseLM with learned positions and the erf GELU, given
    nanoGPT's weights (and its LayerNorm ε 1e-5 for Flax's 1e-6, zero LN biases), gives nanoGPT's logits."""
    torch = pytest.importorskip("torch", reason="torch is the optional bench extra: pip install -e '.[bench]'")
    _peer_module()
    import originals
    from torch_reference import DenseLM

    s = dict(vocab_size=256, block_size=16, n_layer=2, n_head=2, n_embd=32)
    nano = originals.nanogpt_model(PEERS / "nanogpt", **s)
    port = DenseLM(
        256, 32, 2, 2, mlp_ratio=4.0, mlp_kind="gelu_exact", tie_embeddings=True, smear_keys=False, learned_positions=16
    )
    src = dict(nano.named_parameters())
    names = {
        "embed.weight": "transformer.wte.weight",
        "pos.weight": "transformer.wpe.weight",
        "ln_f.weight": "transformer.ln_f.weight",
    }
    for i in range(2):
        for ours, theirs in [
            ("ln1", "ln_1"),
            ("ln2", "ln_2"),
            ("attn.qkv", "attn.c_attn"),
            ("attn.out", "attn.c_proj"),
            ("mlp.up", "mlp.c_fc"),
            ("mlp.down", "mlp.c_proj"),
        ]:
            names[f"blocks.{i}.{ours}.weight"] = f"transformer.h.{i}.{theirs}.weight"
    with torch.no_grad():
        for name, p in port.named_parameters():
            if name in names:
                p.copy_(src[names[name]])
            else:
                assert name.endswith(".bias"), name  # the port's LayerNorm biases (nanoGPT: bias=False)
                p.zero_()
    for m in port.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = 1e-5  # nanoGPT's (the port keeps Flax's 1e-6: same work)
    nano.eval()
    x = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        y = torch.randint(0, 256, (2, 16))
        theirs, _ = nano(x, y)  # with targets: logits at every position
        ours, _ = port(x)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-4, rtol=1e-4)
    # and without its learned positions (RoPE instead) it is a different function
    rope = DenseLM(256, 32, 2, 2, mlp_ratio=4.0, mlp_kind="gelu_exact", tie_embeddings=True, smear_keys=False)
    assert originals.count_params(port) == originals.count_params(rope) + 16 * 32
