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

pytestmark = pytest.mark.skipif(
    "jax_cpu_collectives_implementation" not in jax.config.values,
    reason="this jaxlib has no CPU collectives option (gloo): multi-process CPU runs cannot exchange gradients",
)

SMALL = [
    "model.d_model=32",
    "model.n_layers=1",
    "model.n_heads=2",
    "model.seq_len=16",
    "train.batch_size=8",
    "train.steps=10",
    "train.eval_every=5",
    "train.log_every=5",
    "checkpoint.every=5",
    "eval.batches=2",
    "eval.batch_size=4",
    "eval.sample_tokens=8",
    "train.progress=false",
]


def _rows(run, kind):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_two_processes_match_one_process_with_four_devices(tmp_path):
    from spiraljax.runs import load_run

    args = [
        "train.py",
        "--config",
        "configs/transformer_tiny.yaml",
        "--set",
        *SMALL,
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    one = tmp_path / "one"
    r = subprocess.run(
        [sys.executable, *args, "--workdir", str(one)],
        cwd=ROOT,
        env=subprocess_env(devices=4),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    two = tmp_path / "two"
    command = [sys.executable, *args, "--workdir", str(two), "--distributed"]
    r = subprocess.run(
        [sys.executable, "-m", "spiraljax.launch", "-n", "2", "-d", "2", "--", *command],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
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
    assert (
        launch_local(
            [sys.executable, "-c", "import os, sys; sys.exit(3 if os.environ['JAX_PROCESS_ID'] == '1' else 0)"],
            processes=2,
            local_devices=1,
            timeout=60,
        )
        == 3
    )
    assert capsys.readouterr().err == "error: process 1 of 2 exited with status 3; stopped the others\n"
    says = (
        "import os, sys, time\nif os.environ['JAX_PROCESS_ID'] == '1':\n    print('x', flush=True)\n"
        "    print('error: process 1 of 2: no corpus', file=sys.stderr)\n    sys.exit(2)\ntime.sleep(60)"
    )
    assert launch_local([sys.executable, "-c", says], processes=2, local_devices=1, timeout=60) == 2
    out = capsys.readouterr()
    assert out.err == "error: process 1 of 2: no corpus\n" and out.out == ""  # once, naming it; others stopped
    env = local_env(1, 2, 3, 1234)
    assert env["JAX_PROCESS_ID"] == "1" and env["JAX_NUM_PROCESSES"] == "2"
    assert env["JAX_COORDINATOR_ADDRESS"] == "127.0.0.1:1234"
    assert env["XLA_FLAGS"].count("xla_force_host_platform_device_count") == 1
    with pytest.raises(SystemExit) as err:
        main(["-n", "2"])
    assert err.value.code == 2 and "no command given" in capsys.readouterr().err


def test_only_process_zero_speaks(tmp_path):
    """The launcher run of the first test prints each line once, from process 0, without Gloo's
    connection notices (before: every line twice and ~10 '[Gloo] Rank … connected' lines)."""
    args = [
        "train.py",
        "--config",
        "configs/transformer_tiny.yaml",
        "--set",
        *SMALL,
        "train.steps=2",
        "train.eval_every=2",
        "checkpoint.every=2",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    command = [sys.executable, *args, "--workdir", str(tmp_path / "run"), "--distributed"]
    r = subprocess.run(
        [sys.executable, "-m", "spiraljax.launch", "-n", "2", "-d", "2", "--", *command],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0 and r.stderr == "", r.stdout[-2000:] + r.stderr[-2000:]
    run, lines = tmp_path / "run", r.stdout.splitlines()
    assert len(lines) == 4 and lines[0] == f"run directory: {run}" and lines[1].startswith("step 2: val loss "), lines
    assert lines[2].startswith("finished at step 2 in "), lines
    assert lines[3].startswith(f"run directory: {run}   (evaluate"), lines


# ----------------------------------------------------------------------------- lost peers and preemption
# Processes started by hand, as a cluster scheduler would (the environment variables, no launcher).
LONG = [*SMALL, "train.steps=60", "train.eval_every=60", "train.log_every=1", "eval.sample_tokens=0"]
PEER_TIMEOUT = 5


def _train_args(tmp_path, run):
    return [
        sys.executable,
        "train.py",
        "--config",
        "configs/transformer_tiny.yaml",
        "--workdir",
        str(run),
        "--set",
        *LONG,
        f"data.cache_dir={tmp_path / 'cache'}",
    ]


def _start_by_hand(tmp_path, run):
    from spiraljax.train.distributed import free_port

    port = free_port()
    envs = [
        {**local_env(i, 2, 2, port), "PYTHONUNBUFFERED": "1", "SPIRALJAX_PEER_TIMEOUT_S": str(PEER_TIMEOUT)}
        for i in range(2)
    ]
    return [
        subprocess.Popen(
            [*_train_args(tmp_path, run), "--distributed"],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for env in envs
    ]


def _last_step(run) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = [0]
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:  # a line being written
            continue
        if row["kind"] == "train":
            steps.append(row["step"])
    return max(steps)


def _wait_for_step(run, procs, step, timeout=300):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _last_step(run) >= step:
            return
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: 1 process x 4 devices, 60 steps."""
    from spiraljax.runs import load_run

    tmp = tmp_path_factory.mktemp("reference")
    r = subprocess.run(
        _train_args(tmp, tmp / "run"),
        cwd=ROOT,
        env=subprocess_env(devices=4),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return _rows(tmp / "run", "train"), load_run(tmp / "run", "latest")[1]


def _assert_same_run(run, reference):
    from spiraljax.runs import load_run

    rows, params = reference
    got = {r["step"]: r["loss"] for r in _rows(run, "train")}
    assert sorted(got) == list(range(1, 61)), sorted(got)  # every step once, none repeated or lost
    for r in rows:
        assert abs(got[r["step"]] - r["loss"]) <= 1e-5 * abs(r["loss"]), (r["step"], got[r["step"]], r["loss"])
    _, mine, step = load_run(run, "latest", return_step=True)
    assert step == 60
    for a, b in zip(jax.tree.leaves(mine["params"]), jax.tree.leaves(params["params"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("killed", [1, 0])
def test_a_killed_peer_stops_the_survivor_with_one_line_and_the_run_resumes_exactly(tmp_path, reference, killed):
    """SIGKILL to one process mid-run: the other ends by itself about PEER_TIMEOUT s later with one
    line and status 75 (before: ~80 s, then SIGABRT and a 28-line C++ stack trace; with process 0,
    which hosted the coordination service, killed: an abort at once). ``--resume`` in one process
    with 4 devices then ends exactly where the uninterrupted run does."""
    import signal

    from spiraljax.train.distributed import PEER_LOST_EXIT

    run = tmp_path / "run"
    procs = _start_by_hand(tmp_path, run)
    try:
        _wait_for_step(run, procs, 12)
        procs[killed].send_signal(signal.SIGKILL)
        survivor = procs[1 - killed]
        _, err = survivor.communicate(timeout=PEER_TIMEOUT + 60)  # it must end by itself
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert survivor.returncode == PEER_LOST_EXIT, err
    assert err == (
        f"error: lost process {killed} of 2 (no sign of life for {PEER_TIMEOUT} s); process {1 - killed} "
        f"stops (exit status {PEER_LOST_EXIT}); resume the run with --resume\n"
    ), err
    r = subprocess.run(
        [sys.executable, "train.py", "--workdir", str(run), "--resume"],
        cwd=ROOT,
        env=subprocess_env(devices=4),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0 and "resumed" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    _assert_same_run(run, reference)


def test_sigterm_to_one_process_stops_all_at_one_checkpoint_and_the_run_resumes_exactly(tmp_path, reference):
    """SIGTERM to process 1 only: both processes stop after the same step, save that step together
    and exit 0 (before: process 1 alone left the loop and the checkpoint never completed); the run
    then resumes on 2 processes through the launcher and ends where the uninterrupted run does."""
    import signal

    run = tmp_path / "run"
    procs = _start_by_hand(tmp_path, run)
    try:
        _wait_for_step(run, procs, 12)
        procs[1].send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [p.returncode for p in procs] == [0, 0], outs
    line = next(line for line in outs[0][0].splitlines() if "saved checkpoint at step" in line)
    step = int(line.split("saved checkpoint at step ")[1].split(";")[0])
    assert 12 < step < 60 and (run / "checkpoints" / str(step)).is_dir(), line
    assert f"resume with: python train.py --workdir {run} --resume" in line
    assert outs[1][0] == ""  # process 1 said nothing on stdout
    command = [sys.executable, "train.py", "--workdir", str(run), "--resume", "--distributed"]
    r = subprocess.run(
        [sys.executable, "-m", "spiraljax.launch", "-n", "2", "-d", "2", "--", *command],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0 and f"resumed {run} at step {step}\n" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    _assert_same_run(run, reference)


def test_peer_watch_finds_a_silent_or_failed_peer_and_ignores_a_finished_one():
    """PeerWatch against an in-memory key-value store: a peer whose counter stops is lost after the
    timeout, one that wrote 'failed' at once, one that wrote 'done' never."""
    import threading
    import time

    from spiraljax.train.distributed import PeerWatch

    class Store:
        def __init__(self):
            self.kv, self.lock = {}, threading.Lock()

        def key_value_set(self, key, value, allow_overwrite=False):
            with self.lock:
                self.kv[key] = value

        def key_value_try_get(self, key):
            with self.lock:
                if key not in self.kv:
                    raise KeyError(key)
                return self.kv[key]

    def watch(store, me, n, verdicts):
        return PeerWatch(store, me, n, timeout=0.5, interval=0.02, on_lost=verdicts.append)

    store, verdicts = Store(), []
    a, b = watch(store, 0, 2, verdicts), watch(store, 1, 2, [])
    a.start(), b.start()
    time.sleep(0.3)
    assert verdicts == []
    b._stop.set()  # process 1 goes silent (as if killed)
    assert a.wait_for_verdict(5) == "lost process 1 of 2 (no sign of life for 0.5 s)"
    assert verdicts == [
        "error: lost process 1 of 2 (no sign of life for 0.5 s); process 0 stops (exit status 75); "
        "resume the run with --resume"
    ]

    store, verdicts = Store(), []
    a, b = watch(store, 0, 2, verdicts), watch(store, 1, 2, [])
    a.start(), b.start()
    time.sleep(0.1)
    b.finish(failed=True)
    assert a.wait_for_verdict(5) == "process 1 of 2 failed (see its output)"

    store, verdicts = Store(), []
    a, b = watch(store, 0, 2, verdicts), watch(store, 1, 2, [])
    a.start(), b.start()
    time.sleep(0.1)
    b.finish()
    assert a.wait_for_verdict(1.0) is None and verdicts == []  # a finished peer is not lost
    a.finish()
    assert not a.thread.is_alive()  # finish() waits for it: no thread inside the client at exit
