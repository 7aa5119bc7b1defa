"""No lost work, no confusing state (issue 12): the run lock, resume compatibility, corrupt
checkpoints moved aside, one-line errors, no leftovers, glyph prompts, bits per glyph."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT, subprocess_env
from spiraljax.train.lock import LockError, RunLock

# ----------------------------------------------------------------------------- the run lock

_LOCK_WORKER = textwrap.dedent(f"""
    import os, sys, time
    from spiraljax.train.lock import LockError, RunLock
    gate, base, trials = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for t in range(trials):
        os.read(gate, 1)                       # the barrier: the parent writes every gate at once
        lock = RunLock(f"{{base}}/t{{t}}")
        try:
            lock.acquire()
        except LockError:
            print(t, "refused", flush=True)
            continue
        t0 = time.monotonic()
        time.sleep(0.03)
        t1 = time.monotonic()
        lock.release()
        print(t, "held", t0, t1, flush=True)
""")


def test_lock_never_has_two_holders(tmp_path):
    """6 processes try to take the same lock at the same instant, 50 times: the intervals in which
    they hold it never overlap (the old create-then-write-PID lock gave two holders in ~1 of 4)."""
    n_workers, trials = 6, 50
    gates = [os.pipe() for _ in range(n_workers)]
    workers = [subprocess.Popen([sys.executable, "-c", _LOCK_WORKER, str(r), str(tmp_path), str(trials)],
                                pass_fds=(r,), stdout=subprocess.PIPE, text=True) for r, _ in gates]
    try:
        overlaps = []
        for t in range(trials):
            for _, w in gates:
                os.write(w, b"x")
            lines = [w.stdout.readline().split() for w in workers]
            assert all(line and int(line[0]) == t for line in lines), lines
            held = sorted((float(a), float(b)) for _, kind, *ab in lines if kind == "held" for a, b in [ab])
            assert held, f"trial {t}: nobody got the lock"
            overlaps += [t for (a0, a1), (b0, b1) in zip(held, held[1:]) if b0 < a1]
        assert not overlaps, f"two simultaneous holders in trials {overlaps}"
    finally:
        for w in workers:
            w.kill()
            w.wait()
        for r, w in gates:
            os.close(r)
            os.close(w)


_HOLDER = textwrap.dedent(f"""
    import sys, time
    from spiraljax.train.lock import RunLock
    RunLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def test_lock_refuses_while_held_and_is_free_once_the_holder_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockError, match=f"already in use by running process {holder.pid} "):
            RunLock(tmp_path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        holder.kill()
    assert (tmp_path / "LOCK").read_text() == str(holder.pid)   # a SIGKILL leaves the file behind...
    with RunLock(tmp_path):                                      # ...but the kernel already freed the lock
        assert (tmp_path / "LOCK").read_text() == str(os.getpid())
    assert not (tmp_path / "LOCK").exists()


def test_leftover_lock_file_with_a_live_pid_does_not_block(tmp_path):
    """A LOCK left by a dead run whose PID now belongs to a live process (PID reuse; pid 1 is always
    alive) used to refuse every later run; only a held lock refuses now."""
    (tmp_path / "LOCK").write_text("1")
    with RunLock(tmp_path) as lock:
        assert lock.held
        with pytest.raises(LockError, match=f"running process {os.getpid()}"):
            RunLock(tmp_path).acquire()   # a second open file in the same process is refused too


# ----------------------------------------------------------------------------- runs, resume and checkpoints
import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402

import numpy as np  # noqa: E402

from conftest import TINY  # noqa: E402
from spiraljax import config  # noqa: E402
from spiraljax.data.base import DataError  # noqa: E402
from spiraljax.train.checkpoint import load_run  # noqa: E402
from spiraljax.errors import RunError  # noqa: E402
from spiraljax.experiment import run as train  # noqa: E402
from spiraljax.train.metrics import read_metrics  # noqa: E402

SHORT = ["train.steps=10", "train.eval_every=5", "eval.sample_tokens=0"]


def tiny_cfg(tmp, *extra):
    return config.load(None, TINY + [f"data.cache_dir={tmp / 'cache'}", *SHORT, *extra])


def glyph_cfg(*extra):
    return config.load(None, TINY + SHORT + GLYPH + list(extra))


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A finished 10-step tiny run with checkpoints at 5 and 10 (latest) and the best one."""
    tmp = tmp_path_factory.mktemp("saved")
    train(tiny_cfg(tmp), tmp / "run")
    return tmp / "run"


def copy_run(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def snapshot(run) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


def newest(run) -> int:
    return max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())


def corrupt(step_dir) -> None:
    """Truncate the array data of a saved step to half its size (a crash or full disk mid-copy)."""
    files = [f for f in step_dir.rglob("*") if f.is_file() and f.parent.name == "d"]
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def cli(*args, timeout=300, cwd=None):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=subprocess_env(), capture_output=True,
                          text=True, timeout=timeout)


def test_resume_with_a_changed_model_is_refused_in_one_line_and_changes_nothing(saved_run, tmp_path):
    run = copy_run(saved_run, tmp_path)
    before = snapshot(run)
    r = cli(ROOT / "train.py", "--workdir", run, "--resume", "--set", "model.d_model=64", "train.steps=12")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert "model.d_model 32 → 64" in r.stderr and "params/" in r.stderr and "Nothing was changed" in r.stderr
    assert snapshot(run) == before                          # config.yaml, metrics, checkpoints untouched
    assert load_run(run)[0].model.d_model == 32             # still evaluable...
    assert train(config.load(run / "config.yaml"), run, resume=True).step == 10   # ...and resumable


def test_resume_may_change_length_and_schedule_and_records_it(saved_run, tmp_path):
    run = copy_run(saved_run, tmp_path)
    with pytest.raises(RunError, match=r"cannot resume with train\.seed 0 → 3"):
        train(config.load(run / "config.yaml", ["train.seed=3"]), run, resume=True)
    result = train(config.load(run / "config.yaml", ["train.steps=12", "train.lr=5e-3"]), run, resume=True)
    assert result.step == 12
    assert config.load(run / "config.yaml").train.steps == 12
    info = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "info" and "resumed_at" in r]
    assert info == [{"step": 10, "kind": "info", "resumed_at": 10,
                     "changed": {"train.lr": {"from": 0.01, "to": 0.005}, "train.steps": {"from": 10, "to": 12}}}]


def test_corrupt_newest_checkpoint_is_moved_aside_and_the_retrained_step_is_kept(saved_run, tmp_path, capfd):
    run = copy_run(saved_run, tmp_path)
    step = newest(run)
    corrupt(run / "checkpoints" / str(step))
    r = cli(ROOT / "train.py", "--workdir", run, "--resume")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: checkpoint ") and "moved it to" in lines[0], r.stderr
    assert (run / "checkpoints" / "corrupt" / str(step)).is_dir()
    assert f"resumed {run} at step 5" in r.stdout
    capfd.readouterr()
    # the retrained step was saved under its own number and is what the next resume starts from
    assert load_run(run, "latest", return_step=True)[2] == step
    assert train(config.load(run / "config.yaml"), run, resume=True).step == step
    out = capfd.readouterr()
    assert f"resumed {run} at step {step}" in out.out and "warning" not in out.err


def test_every_checkpoint_unreadable_is_one_line(saved_run, tmp_path):
    run = copy_run(saved_run, tmp_path)
    for step in (5, 10):
        corrupt(run / "checkpoints" / str(step))
    r = cli(ROOT / "train.py", "--workdir", run, "--resume")
    assert r.returncode == 2 and "every checkpoint is unreadable" in r.stderr.strip().splitlines()[-1], r.stderr


def test_a_run_in_the_old_two_manager_layout_is_read_and_resumed(saved_run, tmp_path, capfd):
    """checkpoints/latest/<step> and checkpoints/best/<step> (before one manager) still load and resume;
    new steps go to checkpoints/<step>."""
    run = copy_run(saved_run, tmp_path)
    ckpts = run / "checkpoints"
    (ckpts / "latest").mkdir()
    (ckpts / "best").mkdir()
    shutil.move(str(ckpts / "5"), str(ckpts / "best" / "5"))
    shutil.move(str(ckpts / "10"), str(ckpts / "latest" / "10"))
    assert load_run(run, "latest", return_step=True)[2] == 10
    assert load_run(run, 5, return_step=True)[2] == 5
    result = train(config.load(run / "config.yaml", ["train.steps=15"]), run, resume=True)
    assert result.step == 15 and (ckpts / "15").is_dir()
    assert "warning" not in capfd.readouterr().err


_LOAD = "import sys, spiraljax; print(spiraljax.load_run(sys.argv[1], sys.argv[2], return_step=True)[2])"


def test_load_run_in_a_notebook_prints_one_line_per_problem(saved_run, tmp_path):
    run = copy_run(saved_run, tmp_path)
    r = cli("-c", _LOAD, run, "latest")
    assert r.returncode == 0 and r.stdout.strip() == "10" and r.stderr == "", r.stderr   # no absl notices
    corrupt(run / "checkpoints" / "10")
    r = cli("-c", _LOAD, run, "latest")
    assert r.returncode == 0 and r.stdout.strip() == "5", r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and f"checkpoint {run}/checkpoints/10 is unreadable" in r.stderr, r.stderr


def test_only_orbax_leftovers_are_silenced():
    """The unraisable-exception filter drops what a failed Orbax restore leaves behind and nothing else."""
    from types import SimpleNamespace

    from spiraljax.train.checkpoint import _is_orbax_leftover

    def coroutine_from(filename):
        scope: dict = {}
        exec(compile("async def read():\n    pass\n", filename, "exec"), scope)
        return scope["read"]()

    orbax_coro = coroutine_from("/x/site-packages/orbax/checkpoint/serialization.py")
    user_coro = coroutine_from("/x/mine.py")
    try:
        assert _is_orbax_leftover(SimpleNamespace(exc_value=RuntimeError("Event loop is closed"), object=None))
        assert _is_orbax_leftover(SimpleNamespace(exc_value=Exception("read error"), object=orbax_coro))
        assert not _is_orbax_leftover(SimpleNamespace(exc_value=Exception("read error"), object=user_coro))
        assert not _is_orbax_leftover(SimpleNamespace(exc_value=RuntimeError("other"), object=None))
    finally:
        orbax_coro.close()
        user_coro.close()


def test_only_abandoned_orbax_tasks_are_dropped_from_the_asyncio_log():
    """Under load a failed restore can also leave asyncio 'Task exception was never retrieved' records
    (seen once in CI-like runs); only those of Orbax coroutines are dropped."""
    import logging

    from spiraljax.train.checkpoint import _drop_orbax_tasks

    def record(msg):
        return logging.LogRecord("asyncio", logging.ERROR, "x.py", 1, msg, None, None)

    orbax = ("Task exception was never retrieved\nfuture: <Task finished coro=<async_deserialize() done, "
             "defined at /v/lib/site-packages/orbax/checkpoint/_src/serialization/serialization.py:394>>")
    mine = "Task exception was never retrieved\nfuture: <Task finished coro=<fetch() done, defined at /x/mine.py:3>>"
    assert not _drop_orbax_tasks(record(orbax))
    assert _drop_orbax_tasks(record(mine)) and _drop_orbax_tasks(record("Event loop stopped before Future completed."))


def test_resume_of_a_missing_or_empty_workdir_is_refused(tmp_path):
    r = cli(ROOT / "train.py", "--workdir", tmp_path / "typo", "--resume", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nothing to resume" in r.stderr, r.stderr
    assert not (tmp_path / "typo").exists() and not (tmp_path / "runs").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="nothing to resume"):
        train(tiny_cfg(tmp_path), tmp_path / "empty", resume=True)
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_scratch_with_any_config(tmp_path):
    """Nothing trained yet, nothing to protect: such a resume may change the model (and a directory
    with only checkpoints/, e.g. killed while compiling, still counts as a run)."""
    from spiraljax.train.checkpoint import Checkpointer
    from spiraljax.train.loop import _check_resume, holds_run

    run = tmp_path / "run"
    ckpt = Checkpointer(run)
    try:
        assert holds_run(run)
        config.save(tiny_cfg(tmp_path), run / "config.yaml")
        assert _check_resume(tiny_cfg(tmp_path, "model.d_model=64"), run, ckpt, {}) == {}
    finally:
        ckpt.close()


def test_a_failed_data_check_leaves_no_run_directory(tmp_path):
    with pytest.raises(DataError, match="corpus file not found"):
        train(tiny_cfg(tmp_path, f"data.path={tmp_path / 'missing.txt'}"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


GLYPH = ["model.family=spiralformer", "model.vocab_size=65", "data.source=mycelial", "data.num_echoes=64",
         "eval.sample_prompt=…"]


def test_an_unknown_glyph_in_the_sample_prompt_is_one_line_before_anything_is_written(tmp_path):
    with pytest.raises(DataError, match=r"eval\.sample_prompt: glyph prompt 'hello 🌱regen': unknown glyph 'hello'"):
        train(glyph_cfg("eval.sample_tokens=4", "eval.sample_prompt=hello 🌱regen"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- evaluate.py
@pytest.fixture(scope="module")
def glyph_run(tmp_path_factory):
    """A 2-step tiny Spiralformer on glyph data (enough for units, prompts and suite fitting)."""
    tmp = tmp_path_factory.mktemp("glyph")
    result = train(glyph_cfg("train.steps=2", "train.eval_every=2", "checkpoint.every=2"), tmp / "run")
    return tmp / "run", result


def test_glyph_models_report_bits_per_glyph(glyph_run, saved_run):
    run, result = glyph_run
    assert result.unit == "bits/glyph"
    evals = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals and all(r["unit"] == "bits/glyph" and "bpc" in r for r in evals)   # key kept, unit added
    r = cli(ROOT / "evaluate.py", run)
    assert r.returncode == 0 and "bits/glyph" in r.stdout and "BPC" not in r.stdout, r.stdout + r.stderr
    assert "nats/glyph" in r.stdout and "nats/token" not in r.stdout, r.stdout   # one unit family: per glyph
    r = cli(ROOT / "evaluate.py", saved_run, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["lm"]["unit"] == "BPC", r.stderr
    from spiraljax.eval.plots import summary

    assert "bits/glyph" in summary(run) and "BPC" not in summary(run)
    assert "BPC" in summary(saved_run)


def test_generate_takes_a_glyph_prompt_and_refuses_unknown_glyphs_in_one_line(glyph_run):
    run = glyph_run[0]
    r = cli(ROOT / "evaluate.py", run, "--suite", "generate", "--opt", "prompt=… 🌱regen", "tokens=3", "samples=1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[lines.index("--- sample 0 ---") + 1].startswith("… 🌱regen "), r.stdout
    r = cli(ROOT / "evaluate.py", run, "--suite", "generate", "--opt", "prompt=🌱regen hello")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown glyph 'hello'" in r.stderr, r.stderr


def test_evaluate_refuses_unknown_options_and_suites_that_do_not_fit(saved_run, glyph_run):
    r = cli(ROOT / "evaluate.py", saved_run, "--suite", "generate", "--opt", "tokenz=3")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "unknown option 'tokenz'" in r.stderr and "generate: prompt, samples, tokens" in r.stderr
    r = cli(ROOT / "evaluate.py", saved_run, "--suite", "generate", "--opt", "tokens=many")
    assert r.returncode == 2 and "tokens='many'" in r.stderr and "whole number" in r.stderr, r.stderr
    for suite, run, why in (("recall", glyph_run[0], "data.source mqar"),
                            ("probe", saved_run, "model.family spiralformer"),
                            ("causality", saved_run, "force_")):
        r = cli(ROOT / "evaluate.py", run, "--suite", suite)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, (suite, r.stdout, r.stderr)
        assert "does not fit" in r.stderr and why in r.stderr, (suite, r.stderr)
