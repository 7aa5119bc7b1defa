"""Multi-process training on one machine: 2 processes x 2 CPU devices (jax.distributed on 127.0.0.1,
gloo collectives) train to the same losses and parameters as 1 process with 4 devices."""
from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, subprocess_env
from spiraljax.train.distributed import launch_local, local_env, main

pytestmark = pytest.mark.skipif("jax_cpu_collectives_implementation" not in jax.config.values,
                                reason="this jaxlib has no CPU collectives option (gloo): multi-process CPU runs "
                                       "cannot exchange gradients")

SMALL = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.seq_len=16", "train.batch_size=8",
         "train.steps=10", "train.eval_every=5", "train.log_every=5", "checkpoint.every=5", "eval.batches=2",
         "eval.batch_size=4", "eval.sample_tokens=8", "train.progress=false"]


def _rows(run, kind):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_two_processes_match_one_process_with_four_devices(tmp_path):
    from spiraljax.runs import load_run

    args = ["train.py", "--config", "configs/transformer_tiny.yaml", "--set", *SMALL,
            f"data.cache_dir={tmp_path / 'cache'}"]
    one = tmp_path / "one"
    r = subprocess.run([sys.executable, *args, "--workdir", str(one)], cwd=ROOT, env=subprocess_env(devices=4),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    two = tmp_path / "two"
    command = [sys.executable, *args, "--workdir", str(two), "--distributed"]
    r = subprocess.run([sys.executable, "-m", "spiraljax.launch", "-n", "2", "-d", "2", "--", *command], cwd=ROOT,
                       env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    info = json.loads((two / "run.json").read_text())
    assert info["device"]["process_count"] == 2 and info["device"]["device_count"] == 4
    # process 0 alone wrote the metrics: one row per step and kind
    assert [x["step"] for x in _rows(two, "train")] == [5, 10] == [x["step"] for x in _rows(one, "train")]
    for kind in ("train", "eval"):
        for a, b in zip(_rows(two, kind), _rows(one, kind)):
            assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(b["loss"]), (kind, a, b)
    # the checkpoint written by two processes reads back in this single-device process
    _, got, step = load_run(two, "latest", return_step=True)
    _, want = load_run(one, "latest")
    assert step == 10
    for a, b in zip(jax.tree.leaves(got["params"]), jax.tree.leaves(want["params"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_launcher_reports_failure_and_usage(capsys):
    assert launch_local([sys.executable, "-c",
                         "import os, sys; sys.exit(3 if os.environ['JAX_PROCESS_ID'] == '1' else 0)"],
                        processes=2, local_devices=1, timeout=60) == 3
    env = local_env(1, 2, 3, 1234)
    assert env["JAX_PROCESS_ID"] == "1" and env["JAX_NUM_PROCESSES"] == "2"
    assert env["JAX_COORDINATOR_ADDRESS"] == "127.0.0.1:1234"
    assert env["XLA_FLAGS"].count("xla_force_host_platform_device_count") == 1
    with pytest.raises(SystemExit) as err:
        main(["-n", "2"])
    assert err.value.code == 2 and "no command given" in capsys.readouterr().err
