"""Training loop: learning, exact resume, NaN skipping, checkpoints, lock, signals."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import ROOT, TINY, subprocess_env
from spiraljax import config
from spiraljax.errors import RunError
from spiraljax.experiment import run as train
from spiraljax.train import loop
from spiraljax.runs import load_run
from spiraljax.train.checkpoint import CheckpointError, Checkpointer
from spiraljax.train.lock import LockError, RunLock
from spiraljax.runs import read_metrics


def cfg_for(tmp_path, *extra):
    return config.load(None, TINY + [f"data.cache_dir={tmp_path / 'cache'}", *extra])


def params_of(run, checkpoint="latest"):
    return load_run(run, checkpoint)[1]["params"]


def assert_same_params(a, b, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One uninterrupted 20-step run shared by the tests that compare against it."""
    tmp = tmp_path_factory.mktemp("full")
    result = train(cfg_for(tmp), tmp / "run")
    return tmp / "run", result


def test_training_lowers_loss(full_run):
    run, result = full_run
    rows = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5
    assert result.step == 20 and not result.interrupted
    for name in ("config.yaml", "metrics.jsonl", "plots/metrics.png", "samples/step_0000010.txt"):
        assert (run / name).exists(), name
    assert not (run / "LOCK").exists()


def test_the_bare_loop_calls_only_the_hooks_it_is_given(full_run, tmp_path):
    """``train.loop.train`` without hooks validates but writes no samples or plots; given hooks, it
    calls them with the params and step (and the built-in validation is replaced by ``evaluate``)."""
    calls = []

    def hooks(cfg, model, dataset):
        return loop.TrainHooks(
            sample=lambda params, step: calls.append(("sample", step)) or f"text {step}",
            plot=lambda run: calls.append(("plot", run.name)),
            evaluate=lambda params, step: calls.append(("eval", step)) or {"loss": 1.0 / step, "bpc": 0.0, "ppl": 1.0},
        )

    bare = loop.train(cfg_for(tmp_path), tmp_path / "bare")
    assert bare.val is not None and bare.val["loss"] == pytest.approx(full_run[1].val["loss"], rel=1e-6)
    assert not any((tmp_path / "bare" / "samples").iterdir()) and not (tmp_path / "bare" / "plots").exists()
    hooked = loop.train(cfg_for(tmp_path), tmp_path / "hooked", hooks=hooks)
    assert calls == [("eval", 10), ("sample", 10), ("eval", 20), ("sample", 20), ("plot", "hooked")]
    assert hooked.val["loss"] == pytest.approx(1 / 20)
    assert (tmp_path / "hooked" / "samples" / "step_0000020.txt").read_text() == "text 20"


def test_stop_and_resume_is_exact(full_run, tmp_path):
    run = tmp_path / "run"
    first = train(cfg_for(tmp_path), run, stop_at=10)
    assert first.interrupted and first.step == 10
    with pytest.raises(RunError, match="--resume"):
        train(cfg_for(tmp_path), run)
    second = train(cfg_for(tmp_path), run, resume=True)
    assert second.step == 20
    assert_same_params(params_of(run), params_of(full_run[0]))
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == sorted(set(steps))  # no duplicated history after resume


def test_grad_accumulation_equals_one_large_batch(tmp_path):
    """Two steps with grad_accum=2 on the trainer's micro-batches (``batch_for_step``) give the loss
    and parameters of two plain steps on the same rows as one batch twice as large — also when the
    micro-batches count different numbers of targets, where a plain mean of the micro-batch losses
    would over-weight the sparser one. The training loop with grad_accum=2 runs exactly these steps."""
    from spiraljax.data.base import build_dataset
    from spiraljax.models import build
    from spiraljax.train.setup import batch_for_step
    from spiraljax.train.optim import make_optimizer
    from spiraljax.train.step import init_state, make_train_step

    cfg = cfg_for(tmp_path, "train.grad_accum=2", "train.steps=2", "eval.sample_tokens=0")
    dataset, model, tx = build_dataset(cfg), build(cfg.model), make_optimizer(cfg.train)
    accum, plain = jax.jit(make_train_step(model, tx, 2)), jax.jit(make_train_step(model, tx, 1))
    state_a = state_p = state_loop = init_state(model, tx, dataset.train_batch(0)["inputs"][:1], cfg.train.seed)
    for step in range(2):
        state_loop, _ = accum(state_loop, batch_for_step(dataset, step, 2))  # what the loop should run
        micro = batch_for_step(dataset, step, 2)  # [2, B, T]: micro-batch i on axis 0
        micro["mask"][1, :, ::3] = 0.0  # the second micro-batch counts fewer targets
        large = {k: v.reshape(-1, *v.shape[2:]) for k, v in micro.items()}  # [2B, T]
        state_a, out_a = accum(state_a, micro)
        state_p, out_p = plain(state_p, large)
        np.testing.assert_allclose(out_a["loss"], out_p["loss"], rtol=1e-5)
        np.testing.assert_allclose(out_a["grad_norm"], out_p["grad_norm"], rtol=1e-4)
    assert_same_params(state_a["params"], state_p["params"], atol=1e-5)
    result = train(cfg, tmp_path / "r")
    assert result.step == 2 and np.isfinite(result.val["loss"])
    assert_same_params(params_of(tmp_path / "r"), state_loop["params"], atol=1e-6)


def test_nan_batch_is_skipped_and_counted(tmp_path, monkeypatch):
    from spiraljax.data import text

    real = text.TokenStream.train_batch
    calls = []

    def poisoned(self, step):
        b = real(self, step)
        if step == 2:
            b["mask"] = b["mask"] * np.nan
        calls.append(step)
        return b

    monkeypatch.setattr(text.TokenStream, "train_batch", poisoned)
    run = tmp_path / "run"
    train(cfg_for(tmp_path, "train.steps=5", "train.log_every=1", "eval.sample_tokens=0"), run)
    rows = {r["step"]: r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"}
    assert rows[2]["skipped"] == 0 and rows[3]["skipped"] == 1 and rows[5]["skipped"] == 1
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params_of(run)))


def test_corrupt_latest_checkpoint_falls_back(full_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(full_run[0], run)
    newest = max(saved_steps(run))
    for f in (run / "checkpoints" / str(newest) / "params").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    cfg, variables, step = load_run(run, "latest", return_step=True)
    assert step < newest
    assert "unreadable" in capsys.readouterr().err
    # resuming also falls back instead of crashing, and the corrupt step is then re-trained
    result = train(config.load(run / "config.yaml"), run, resume=True)
    assert result.step == 20


def saved_steps(run) -> list[int]:
    return sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())


def _fake_state(step: int) -> dict:
    return {
        "params": {"w": np.full((2, 3), float(step), np.float32)},
        "opt_state": {"m": np.zeros(3, np.float32)},
        "step": np.int32(step),
        "rng": np.zeros(2, np.uint32),
        "skipped": np.int32(0),
    }


def test_one_manager_keeps_the_newest_and_the_best(tmp_path):
    """keep=2: steps 1..6 saved, the lowest validation loss at step 2 → steps 2, 5, 6 remain; 'best'
    candidates put step 2 first."""
    from spiraljax.train.checkpoint import best_first, run_managers

    ckpt = Checkpointer(tmp_path, keep=2, async_save=False)
    losses = {2: 0.5, 4: 0.9}
    for step in range(1, 7):
        ckpt.save(_fake_state(step), val_loss=losses.get(step))
    ckpt.close()
    assert saved_steps(tmp_path) == [2, 5, 6]
    assert [c.step for c in best_first(run_managers(tmp_path / "checkpoints"))] == [2, 6, 5]


def test_plain_orbax_reads_a_run_without_project_code(full_run):
    """The README's recipe: one CheckpointManager on RUN/checkpoints, items params/opt_state/meta."""
    import orbax.checkpoint as ocp

    run = full_run[0]
    mngr = ocp.CheckpointManager(run / "checkpoints", item_names=("params", "opt_state", "meta"))
    step = mngr.latest_step()
    restored = mngr.restore(
        step, args=ocp.args.Composite(params=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
    )
    assert restored.meta["step"] == step == 20
    assert_same_params(restored.params, params_of(run))
    assert mngr.metrics(20)["val_loss"] == pytest.approx(full_run[1].val["loss"])
    mngr.close()


def test_best_checkpoint_survives_rotation(full_run):
    run = full_run[0]
    assert saved_steps(run) == [10, 15, 20]  # checkpoint.keep = 3 newest; the best (10 or 20) among them
    evals = {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "eval"}
    assert load_run(run, "best", return_step=True)[2] == min(evals, key=evals.get)
    with pytest.raises(CheckpointError, match="no checkpoint at step 999"):
        load_run(run, 999)


def test_lock_refuses_second_run_and_leftover_lock_is_free(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(LockError, match="already in use by running process"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / "LOCK").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "LOCK").write_text(str(dead.pid))  # left by a crashed run: the kernel holds no lock on it
    with RunLock(tmp_path):
        assert (tmp_path / "LOCK").read_text() != str(dead.pid)
    assert not (tmp_path / "LOCK").exists()


def tiny_yaml(tmp_path) -> str:
    """The in-process tests' tiny config as a file, so CLI runs train exactly the same model."""
    path = tmp_path / "tiny.yaml"
    config.save(cfg_for(tmp_path), path)
    return str(path)


def _start(tmp_path, run, *extra):
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        "--config",
        tiny_yaml(tmp_path),
        "--workdir",
        str(run),
        "--set",
        *extra,
    ]
    return subprocess.Popen(
        args, cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for(predicate, proc, timeout=240):
    t0 = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"train.py exited early:\n{proc.stdout.read()}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_signal_then_resume_matches_uninterrupted(full_run, tmp_path, sig):
    """SIGTERM saves and exits cleanly; SIGKILL after a periodic checkpoint loses nothing either."""
    run = tmp_path / "run"
    proc = _start(tmp_path, run, "train.steps=20")
    ckpt = run / "checkpoints" / "5" / "commit_success.txt"
    if sig == signal.SIGKILL:
        _wait_for(ckpt.exists, proc)
    else:
        _wait_for(lambda: any(r["kind"] == "train" for r in read_metrics(run / "metrics.jsonl")), proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, out
        assert "received SIGTERM" in out or "finished at step 20" in out
        assert not (run / "LOCK").exists()
    cfg, variables, step = load_run(run, "latest", return_step=True)
    assert step >= 5
    resumed = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--workdir", str(run), "--resume"],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_same_params(params_of(run), params_of(full_run[0]))


def test_cli_errors_are_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--set", "model.bogus=1"],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "unknown key model.bogus" in r.stderr
    r = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), str(tmp_path / "nope")],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "run directory not found" in r.stderr


def test_evaluate_cli_reports_bpc(full_run):
    r = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), str(full_run[0]), "--json"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["lm"]["bpc"] > 0 and np.isfinite(data["lm"]["ppl"])


def test_multi_device_data_parallel_matches_single_device(full_run, tmp_path):
    """4 fake CPU devices, batch split over the data axis: same params as the 1-device run."""
    run = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config", tiny_yaml(tmp_path), "--workdir", str(run)],
        cwd=tmp_path,
        env=subprocess_env(devices=4),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    info = [x for x in read_metrics(run / "metrics.jsonl") if x["kind"] == "info"][0]
    assert info["devices"] == 4
    assert_same_params(params_of(run), params_of(full_run[0]), atol=1e-4)
