"""Training with carried state (train.carry_state: truncated BPTT): the refusals, the step's carry and
reset, the carried validation pass, exact mid-document resume, the 4-device split of the carry and the
notebook helper spiraljax.state.stream with the loop docs/long_context.md documents."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, subprocess_env
from spiraljax import config, models
from spiraljax.data.base import build_dataset
from spiraljax.errors import ConfigError
from spiraljax.experiment import run as train
from spiraljax.losses import evaluate_lm, make_eval_step
from spiraljax.state import reset_rows, stream
from spiraljax.runs import load_run
from spiraljax.runs import read_metrics
from spiraljax.train.optim import make_optimizer
from spiraljax.train.step import check_carry, init_state, make_train_step

CARRY = [
    "data.source=longdocs",
    "data.corpus=shakespeare",
    "train.carry_state=true",
    "model.seq_len=16",
    "train.batch_size=4",
    "eval.batch_size=2",
    "eval.batches=3",
    "train.progress=false",
    "eval.sample_tokens=0",
]


def kssm_cfg(tmp_path, *extra, version="v1"):
    return config.load(
        ROOT / "configs" / f"kssm_{version}_tiny.yaml", [*CARRY, f"data.cache_dir={tmp_path / 'cache'}", *extra]
    )


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    cfg = kssm_cfg(tmp_path_factory.mktemp("v1"))
    model, dataset, tx = models.build(cfg.model), build_dataset(cfg), make_optimizer(cfg.train)
    return cfg, model, dataset, tx


def test_carry_state_is_refused_where_it_cannot_work(tmp_path, v1):
    cfg, model, dataset, _ = v1
    check_carry(cfg, model, dataset.train_batch(0))  # fits
    text = config.load(ROOT / "configs" / "kssm_v1_tiny.yaml", ["train.carry_state=true"])
    with pytest.raises(ConfigError, match=r"^train.carry_state: data.source 'text' gives no per-row document") as err:
        check_carry(text, model, {"inputs": None})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^train.carry_state: cannot carry state with train.grad_accum=2"):
        check_carry(kssm_cfg(tmp_path, "train.grad_accum=2"), model, dataset.train_batch(0))
    with pytest.raises(ConfigError, match=r"^train.carry_state: model.family 'kssm_v1' has no carried state"):
        check_carry(cfg, object(), dataset.train_batch(0))
    with pytest.raises(ConfigError, match="data.source 'text'"):  # before the run directory is made
        train(
            config.load(
                ROOT / "configs" / "kssm_v1_tiny.yaml", ["train.carry_state=true", f"data.cache_dir={tmp_path / 'c'}"]
            ),
            tmp_path / "r",
        )
    assert not (tmp_path / "r").exists()


def test_the_step_carries_the_state_and_resets_rows(v1):
    """Step 0 starts every row from initial_state; its new carry is the model's output state for the
    window; a row whose next window has ``reset`` starts fresh again, the others carry on."""
    cfg, model, dataset, tx = v1
    b0, b1 = dataset.train_batch(0), dataset.train_batch(1)
    assert b0["reset"].all() and not b1["reset"].any()
    state = init_state(model, tx, b0["inputs"][:1], 0, carry_batch=4)
    params0 = state["params"]
    step = jax.jit(make_train_step(model, tx, carry_state=True))
    apply = jax.jit(lambda p, x, s: model.apply({"params": p}, x, state=s)[1]["state"])
    s1, _ = step(state, b0)
    expect = apply(params0, b0["inputs"], model.initial_state(4))
    np.testing.assert_allclose(s1["carry"]["theta"], expect["theta"], atol=1e-5)
    b1 = {**b1, "reset": np.array([True, False, False, False])}
    s2, out = step(s1, b1)
    fresh = apply(s1["params"], b1["inputs"], model.initial_state(4))
    carried = apply(s1["params"], b1["inputs"], s1["carry"])
    np.testing.assert_allclose(s2["carry"]["theta"][0], fresh["theta"][0], atol=1e-5)
    np.testing.assert_allclose(s2["carry"]["theta"][1:], carried["theta"][1:], atol=1e-5)
    assert not np.allclose(fresh["theta"][1:], carried["theta"][1:], atol=1e-3)
    plain = jax.jit(make_train_step(model, tx))({k: v for k, v in s1.items() if k != "carry"}, b1)[1]
    assert abs(float(plain["loss"]) - float(out["loss"])) > 1e-6  # the carried state changes the loss
    poisoned = {**s2, "carry": {"theta": jnp.full_like(s2["carry"]["theta"], jnp.nan), "started": jnp.ones(4, bool)}}
    s3, out = step(poisoned, dataset.train_batch(2))  # non-finite loss: skipped, and the carry restarts
    assert int(out["skipped"]) == 1 and int(s3["step"]) == 3
    assert not s3["carry"]["started"].any() and (np.asarray(s3["carry"]["theta"]) == 0).all()


def test_validation_carries_the_state_across_windows(v1):
    cfg, model, dataset, tx = v1
    params = init_state(model, tx, dataset.train_batch(0)["inputs"][:1], 0)["params"]
    carried = evaluate_lm(model, params, dataset, carry_state=True)
    state, nll, n = model.initial_state(2), 0.0, 0.0
    for batch in dataset.val_batches():  # the same pass by hand
        state = reset_rows(state, model.initial_state(2), batch["reset"])
        logits, aux = model.apply({"params": params}, batch["inputs"], state=state)
        state = aux["state"]
        nll += float(
            jnp.sum(-jax.nn.log_softmax(logits)[np.arange(2)[:, None], np.arange(16), batch["targets"]] * batch["mask"])
        )
        n += float(batch["mask"].sum())
    assert carried["loss"] == pytest.approx(nll / n, rel=1e-5)
    assert carried["loss"] != pytest.approx(evaluate_lm(model, params, dataset)["loss"], rel=1e-5)
    step = jax.jit(make_eval_step(model, dataset.token_bytes, carry_state=True))
    assert evaluate_lm(model, params, dataset, eval_step=step, carry_state=True) == carried


def _rows(run):
    """metrics.jsonl without the wall-clock fields."""
    return [
        {k: v for k, v in r.items() if k not in ("tokens_per_s", "train_seconds")}
        for r in read_metrics(run / "metrics.jsonl")
        if r["kind"] in ("train", "eval")
    ]


def test_a_run_resumed_mid_document_is_bit_exact(tmp_path, capsys):
    """K-SSM v3 with carried state on the shakespeare stream: stopped at step 6 (in the middle of every
    row's document) and resumed gives the uninterrupted run's metrics and parameters bit for bit."""
    extra = ["train.steps=12", "train.eval_every=6", "train.log_every=2", "checkpoint.every=4"]
    cfg = kssm_cfg(tmp_path, *extra, version="v3")
    train(cfg, tmp_path / "full")
    out = capsys.readouterr().out
    sha = build_dataset(cfg).sha256
    assert f"corpus sha256 {sha}" in out
    info = read_metrics(tmp_path / "full" / "metrics.jsonl")[0]
    assert info["kind"] == "info" and info["data_sha256"] == sha
    evals = [r for r in read_metrics(tmp_path / "full" / "metrics.jsonl") if r["kind"] == "eval"]
    assert len(evals) == 2 and 0 < evals[0]["train_seconds"] <= evals[1]["train_seconds"]
    first = train(cfg, tmp_path / "part", stop_at=6)
    assert first.interrupted and (tmp_path / "part" / "checkpoints" / "6" / "carry").is_dir()
    second = train(cfg, tmp_path / "part", resume=True)
    assert second.step == 12 and not second.interrupted
    assert _rows(tmp_path / "part") == _rows(tmp_path / "full")
    for a, b in zip(
        jax.tree.leaves(load_run(tmp_path / "part", "latest")[1]),
        jax.tree.leaves(load_run(tmp_path / "full", "latest")[1]),
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    resumed_evals = [r for r in read_metrics(tmp_path / "part" / "metrics.jsonl") if r["kind"] == "eval"]
    assert resumed_evals[1]["train_seconds"] >= resumed_evals[0]["train_seconds"] > 0  # carried by the checkpoint


_FOUR_DEVICES = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from spiraljax import config
    from spiraljax.config import MeshConfig
    from spiraljax.train.setup import setup
    from spiraljax.train.sharding import batch_shardings, make_mesh, replicated, shard_batch, state_shardings
    from spiraljax.train.step import init_state, make_train_step

    cfg = config.load(sys.argv[1], sys.argv[2:])
    p = setup(cfg)
    out = {}
    for name, mesh_cfg in (("one", MeshConfig(data=1)), ("four", MeshConfig(data=4))):
        mesh = make_mesh(mesh_cfg, cfg.train.batch_size)
        shardings = state_shardings(p.abstract_state, mesh)
        state = jax.jit(lambda x: init_state(p.model, p.tx, x, 0, 4), out_shardings=shardings)(p.sample_inputs)
        specs = batch_shardings(p.dataset.train_batch(0), mesh)
        step = jax.jit(make_train_step(p.model, p.tx, carry_state=True), in_shardings=(shardings, specs),
                       out_shardings=(shardings, replicated(mesh)))
        losses, carries = [], []
        for s in range(3):
            state, m = step(state, shard_batch(p.dataset.train_batch(s), mesh))
            losses.append(float(m["loss"]))
            carries.append(np.asarray(state["carry"]["theta"]).tolist())
        theta = state["carry"]["theta"]
        out[name] = {"losses": losses, "carry": carries, "spec": str(theta.sharding.spec),
                     "shard": list(theta.sharding.shard_shape(theta.shape))}
    print("RESULT " + json.dumps(out))
""")


def test_the_carry_is_split_over_the_batch_axes_on_four_devices(tmp_path):
    args = [str(ROOT / "configs" / "kssm_v1_tiny.yaml"), *CARRY, f"data.cache_dir={tmp_path / 'cache'}"]
    r = subprocess.run(
        [sys.executable, "-c", _FOUR_DEVICES, *args],
        cwd=tmp_path,
        env=subprocess_env(devices=4),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")][-1][len("RESULT ") :])
    one, four = res["one"], res["four"]
    assert "data" in four["spec"] and four["shard"][0] == 1 and one["shard"][0] == 4
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose(four["carry"][0], one["carry"][0], atol=1e-5)  # same parameters: same carry


def test_stream_equals_the_whole_sequence(v1):
    """stream() over 2.5 windows = one apply over the whole sequence (the docs' notebook loop is run by test_docs)."""
    cfg, model, dataset, tx = v1
    variables = {"params": init_state(model, tx, dataset.train_batch(0)["inputs"][:1], 0)["params"]}
    tokens = jax.random.randint(jax.random.key(1), (2, 40), 0, 256)  # 2.5 windows of 16
    logits, state = stream(model, variables, tokens, 16)
    whole, aux = model.apply(variables, tokens, state=model.initial_state(2))
    np.testing.assert_allclose(logits, whole, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(state["theta"], aux["state"]["theta"], atol=1e-4)
