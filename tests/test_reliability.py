"""No lost work, no confusing state (issue 12): the run lock, resume compatibility, corrupt
checkpoints moved aside, one-line errors, no leftovers, glyph prompts, bits per glyph."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, subprocess_env
from spiraljax.train.lock import LockError, RunLock

# ----------------------------------------------------------------------------- the run lock

_LOCK_WORKER = textwrap.dedent("""
    import os, sys, time
    from spiraljax.train.lock import LockError, RunLock
    gate, base, trials = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for t in range(trials):
        os.read(gate, 1)                       # the barrier: the parent writes every gate at once
        lock = RunLock(f"{base}/t{t}")
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
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _LOCK_WORKER, str(r), str(tmp_path), str(trials)],
            pass_fds=(r,),
            stdout=subprocess.PIPE,
            text=True,
        )
        for r, _ in gates
    ]
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


_HOLDER = textwrap.dedent("""
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
    assert (tmp_path / "LOCK").read_text() == str(holder.pid)  # a SIGKILL leaves the file behind...
    with RunLock(tmp_path):  # ...but the kernel already freed the lock
        assert (tmp_path / "LOCK").read_text() == str(os.getpid())
    assert not (tmp_path / "LOCK").exists()


def test_leftover_lock_file_with_a_live_pid_does_not_block(tmp_path):
    """A LOCK left by a dead run whose PID now belongs to a live process (PID reuse; pid 1 is always
    alive) used to refuse every later run; only a held lock refuses now."""
    (tmp_path / "LOCK").write_text("1")
    with RunLock(tmp_path) as lock:
        assert lock.held
        with pytest.raises(LockError, match=f"running process {os.getpid()}"):
            RunLock(tmp_path).acquire()  # a second open file in the same process is refused too


# ----------------------------------------------------------------------------- runs, resume and checkpoints
import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402


from conftest import TINY  # noqa: E402
from spiraljax import config  # noqa: E402
from spiraljax.data.base import DataError  # noqa: E402
from spiraljax.runs import load_run  # noqa: E402
from spiraljax.errors import RunError  # noqa: E402
from spiraljax.experiment import run as train  # noqa: E402
from spiraljax.runs import read_metrics  # noqa: E402

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
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def newest(run) -> int:
    return max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())


def corrupt(step_dir) -> None:
    """Truncate the array data of a saved step to half its size (a crash or full disk mid-copy)."""
    files = [f for f in step_dir.rglob("*") if f.is_file() and f.parent.name == "d"]
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def cli(*args, timeout=300, cwd=None):
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_resume_with_a_changed_model_is_refused_in_one_line_and_changes_nothing(saved_run, tmp_path):
    run = copy_run(saved_run, tmp_path)
    before = snapshot(run)
    r = cli(ROOT / "train.py", "--workdir", run, "--resume", "--set", "model.d_model=64", "train.steps=12")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert "model.d_model 32 → 64" in r.stderr and "params/" in r.stderr and "Nothing was changed" in r.stderr
    assert snapshot(run) == before  # config.yaml, metrics, checkpoints untouched
    assert load_run(run)[0].model.d_model == 32  # still evaluable...
    assert train(config.load(run / "config.yaml"), run, resume=True).step == 10  # ...and resumable


def test_resume_may_change_length_and_schedule_and_records_it(saved_run, tmp_path, capfd):
    run = copy_run(saved_run, tmp_path)
    with pytest.raises(RunError, match=r"cannot resume with train\.seed 0 → 3"):
        train(config.load(run / "config.yaml", ["train.seed=3"]), run, resume=True)
    before = snapshot(run)
    with pytest.raises(RunError, match=r"cannot resume with train\.steps 8: the run has already reached step 10"):
        train(config.load(run / "config.yaml", ["train.steps=8"]), run, resume=True)
    assert snapshot(run) == before  # steps are never lowered below the step reached
    capfd.readouterr()
    result = train(config.load(run / "config.yaml", ["train.steps=12", "train.lr=5e-3"]), run, resume=True)
    assert result.step == 12
    assert f"resumed {run} at step 10; changed: train.lr 0.01 → 0.005, train.steps 10 → 12\n" in capfd.readouterr().out
    assert config.load(run / "config.yaml").train.steps == 12
    info = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "info" and "resumed_at" in r]
    assert info == [
        {
            "step": 10,
            "kind": "info",
            "resumed_at": 10,
            "changed": {"train.lr": {"from": 0.01, "to": 0.005}, "train.steps": {"from": 10, "to": 12}},
        }
    ]


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
    """The whole stderr is one line per problem: nothing printed at interpreter exit (before: now and
    then "coroutine 'Store._get_array_metadatas' was never awaited", "Future exception was never
    retrieved" or "Event loop is closed" tracebacks after the error line)."""
    run = copy_run(saved_run, tmp_path)
    for step in (5, 10):
        corrupt(run / "checkpoints" / str(step))
    r = cli(ROOT / "train.py", "--workdir", run, "--resume")
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 3 and r.stderr.endswith("\n"), r.stderr
    assert [line.split(" is unreadable")[0] for line in lines[:2]] == [
        f"warning: checkpoint {run}/checkpoints/{step}" for step in (10, 5)
    ], r.stderr
    assert lines[2] == f"error: {run}/checkpoints: every checkpoint is unreadable (moved to {run}/checkpoints/corrupt)"


def test_a_failed_restore_leaves_no_pending_orbax_task(saved_run, tmp_path, monkeypatch, capsys):
    """The cause of the noise above: Orbax gathers several read tasks on a fresh event loop; when one
    fails, the loop used to be closed with the others still pending (their coroutines were then
    garbage-collected unawaited, e.g. at exit). Every loop must now close with no pending task."""
    import asyncio

    from spiraljax.errors import CheckpointError

    run = copy_run(saved_run, tmp_path)
    for step in (5, 10):
        corrupt(run / "checkpoints" / str(step))
    pending_at_close = []
    close = asyncio.BaseEventLoop.close

    def spy(loop):
        pending_at_close.append(sum(not t.done() for t in asyncio.all_tasks(loop)))
        close(loop)

    monkeypatch.setattr(asyncio.BaseEventLoop, "close", spy)
    with pytest.raises(CheckpointError, match="every checkpoint is unreadable"):
        load_run(run, "latest")
    assert capsys.readouterr().err.count("is unreadable") == 2
    assert pending_at_close and not any(pending_at_close), pending_at_close


def test_a_run_in_the_old_two_manager_layout_is_refused_in_one_line(saved_run, tmp_path):
    """checkpoints/latest/<step> and checkpoints/best/<step> (the layout before one manager, not read since
    0.1.0) are refused by evaluation and resume alike: one line naming the directory and the move that
    converts it, nothing deleted; after that move the run reads and resumes."""
    run = copy_run(saved_run, tmp_path)
    ckpts = run / "checkpoints"
    (ckpts / "latest").mkdir()
    (ckpts / "best").mkdir()
    shutil.move(str(ckpts / "5"), str(ckpts / "best" / "5"))
    shutil.move(str(ckpts / "10"), str(ckpts / "latest" / "10"))
    from spiraljax.errors import CheckpointError

    with pytest.raises(
        CheckpointError,
        match=r"checkpoints/latest: checkpoints in the layout before version 0\.1\.0 "
        r"\(checkpoints/latest/<step>\), no longer read; move each step up",
    ):
        load_run(run, "latest")
    with pytest.raises(CheckpointError, match="checkpoints/latest: checkpoints in the layout before"):
        train(config.load(run / "config.yaml", ["train.steps=15"]), run, resume=True)
    assert (ckpts / "latest" / "10").is_dir() and (ckpts / "best" / "5").is_dir()  # nothing moved or deleted
    for kind in ("latest", "best"):  # the move the message names
        for step in (ckpts / kind).iterdir():
            shutil.move(str(step), str(ckpts / step.name))
    assert load_run(run, "latest", return_step=True)[2] == 10
    result = train(config.load(run / "config.yaml", ["train.steps=15"]), run, resume=True)
    assert result.step == 15 and (ckpts / "15").is_dir()


_LOAD = "import sys, spiraljax; print(spiraljax.load_run(sys.argv[1], sys.argv[2], return_step=True)[2])"


def test_load_run_in_a_notebook_prints_one_line_per_problem(saved_run, tmp_path):
    run = copy_run(saved_run, tmp_path)
    r = cli("-c", _LOAD, run, "latest")
    assert r.returncode == 0 and r.stdout.strip() == "10" and r.stderr == "", r.stderr  # no absl notices
    corrupt(run / "checkpoints" / "10")
    r = cli("-c", _LOAD, run, "latest")
    assert r.returncode == 0 and r.stdout.strip() == "5", r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and f"checkpoint {run}/checkpoints/10 is unreadable" in r.stderr, r.stderr


def test_draining_loops_cancel_and_await_their_pending_tasks_before_closing():
    """What Orbax's run_sync does (new loop, run_until_complete of a gather that fails fast, close)
    leaves the slower sibling pending; inside draining_event_loops it is cancelled and awaited (its
    finally runs) before the loop closes, and the previous policy is back afterwards."""
    import asyncio

    from spiraljax.train.async_teardown import DrainingEventLoop, draining_event_loops

    ran_finally = []

    async def slow():
        try:
            await asyncio.sleep(60)
        finally:
            ran_finally.append(True)

    async def fails():
        raise ValueError("truncated")

    async def read():
        await asyncio.gather(slow(), fails())  # the first error is raised at once; slow() goes on

    def orbax_like_run_sync():
        loop = asyncio.new_event_loop()
        try:
            with pytest.raises(ValueError):
                loop.run_until_complete(read())
            return loop, [t for t in asyncio.all_tasks(loop) if not t.done()]
        finally:
            loop.close()

    policy = asyncio.get_event_loop_policy()
    with draining_event_loops():
        loop, pending = orbax_like_run_sync()
    assert isinstance(loop, DrainingEventLoop) and len(pending) == 1 and pending[0].cancelled()
    assert ran_finally == [True] and asyncio.get_event_loop_policy() is policy
    loop, pending = orbax_like_run_sync()  # a plain loop: the task is left pending for good
    assert not isinstance(loop, DrainingEventLoop) and not pending[0].done() and ran_finally == [True]
    pending[0].get_coro().close()


def test_a_draining_loop_drops_wake_ups_that_arrive_after_it_closed():
    """A read still running in another thread (TensorStore's) wakes its cancelled task after the loop
    closed: a plain loop raises "Event loop is closed" in that thread (a traceback on stderr), a
    draining loop drops the call."""
    import asyncio
    import threading

    from spiraljax.train.async_teardown import DrainingEventLoop

    def late_wake_up(loop) -> list[BaseException]:
        errors: list[BaseException] = []

        def io_thread():
            try:
                loop.call_soon_threadsafe(lambda: None)
            except RuntimeError as err:
                errors.append(err)

        thread = threading.Thread(target=io_thread)
        thread.start()
        thread.join()
        return errors

    plain, draining = asyncio.SelectorEventLoop(), DrainingEventLoop()
    plain.close()
    draining.close()
    assert [str(e) for e in late_wake_up(plain)] == ["Event loop is closed"]
    assert late_wake_up(draining) == []
    open_loop = DrainingEventLoop()
    try:
        assert open_loop.call_soon_threadsafe(lambda: None) is not None  # an open loop schedules as usual
    finally:
        open_loop.close()


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


GLYPH = [
    "model.family=spiralformer",
    "model.vocab_size=65",
    "data.source=mycelial",
    "data.num_echoes=64",
    "eval.sample_prompt=…",
]


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
    assert evals and all(r["unit"] == "bits/glyph" and "bpc" in r for r in evals)  # key kept, unit added
    r = cli(ROOT / "evaluate.py", run)
    assert r.returncode == 0 and "bits/glyph" in r.stdout and "BPC" not in r.stdout, r.stdout + r.stderr
    assert "nats/glyph" in r.stdout and "nats/token" not in r.stdout, r.stdout  # one unit family: per glyph
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
    for suite, run, why in (
        ("recall", glyph_run[0], "data.source mqar"),
        ("probe", saved_run, "model.family spiralformer"),
        ("causality", saved_run, "force_"),
    ):
        r = cli(ROOT / "evaluate.py", run, "--suite", suite)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, (suite, r.stdout, r.stderr)
        assert "does not fit" in r.stderr and why in r.stderr, (suite, r.stderr)


# ---------------------------------------------------------------- resume picks the right run; errors point at the fix
def test_cli_config_errors_name_the_culprit_once_and_suggest_the_fix(tmp_path):
    r = cli(ROOT / "train.py", "--set", "train.step=100", "--print-config", cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr == "error: --set train.step=100: unknown key train.step (did you mean train.steps?)\n", r.stderr
    r = cli(ROOT / "train.py", "--config", "nope.yaml", cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.count(str(ROOT / "nope.yaml")) == 1, r.stderr
    r = cli(ROOT / "train.py", "--config", "transformer_tiny", "--print-config", cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and config.load(ROOT / "configs" / "transformer_tiny.yaml").to_yaml() == r.stdout, r.stderr
    with pytest.raises(config.ConfigError, match=r"did you mean configs/transformer_tiny\.yaml\?"):
        config.load("transformer_tin")
    with pytest.raises(
        config.ConfigError,
        match=r"^--set modle\.d_model=3: unknown key modle\.d_model "
        r"\(did you mean model\.d_model\?\)$",
    ):
        config.load(ROOT / "configs" / "transformer_tiny.yaml", ["modle.d_model=3"])


def test_a_bare_resume_that_could_mean_two_runs_refuses_and_lists_them(saved_run, tmp_path):
    """The issue's transcript: a finished runs/spiralformer_femto_default and an interrupted ..._1;
    a bare ``python train.py --resume`` used to continue the finished one and lower its train.steps
    to the default experiment's."""
    runs = tmp_path / "runs"
    first, second = runs / "spiralformer_femto_default", runs / "spiralformer_femto_default_1"
    shutil.copytree(saved_run, first)
    shutil.copytree(saved_run, second)
    shutil.rmtree(second / "checkpoints" / "10")
    before = snapshot(first)
    r = cli(ROOT / "train.py", "--resume", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stdout + r.stderr
    assert (
        "could mean 2 runs named spiralformer_femto_default: runs/spiralformer_femto_default (finished at "
        "step 10), runs/spiralformer_femto_default_1 (at step 5 of 10)"
    ) in r.stderr, r.stderr
    assert "python train.py --workdir runs/spiralformer_femto_default_1 --resume" in r.stderr
    assert snapshot(first) == before
    shutil.rmtree(second)
    r = cli(ROOT / "train.py", "--resume", cwd=tmp_path)  # one run of that name: it, with its own config
    assert r.returncode == 0 and "resumed runs/spiralformer_femto_default at step 10\n" in r.stdout, r.stdout + r.stderr
    assert config.load(first / "config.yaml").train.steps == 10


def test_an_interrupted_run_prints_the_command_that_resumes_it_and_plain_progress_lines(tmp_path, capfd):
    """SIGTERM mid-run (sent from the evaluation hook at step 5): the message is the complete resume
    command; with stderr not a terminal, progress comes as plain lines (no carriage-return frames)."""
    from spiraljax.train.loop import TrainHooks, train as bare_train

    def stop_at_first_eval(cfg, model, dataset):
        def evaluate(params, step):
            os.kill(os.getpid(), signal.SIGTERM)
            return {"loss": 1.0, "bpc": 1.0, "ppl": 1.0}

        return TrainHooks(evaluate=evaluate)

    run = tmp_path / "my run"
    result = bare_train(tiny_cfg(tmp_path, "train.progress=true"), run, hooks=stop_at_first_eval)
    assert result.interrupted and result.step == 5
    out = capfd.readouterr()
    resume = f"python train.py --workdir '{run}' --resume"
    assert f"received SIGTERM: saved checkpoint at step 5; resume with: {resume}\n" in out.out
    assert "\r" not in out.err and "tiny: step 1/10 (10%)" in out.err, out.err
    assert out.err.splitlines()[-1].startswith("tiny: step 5/10"), out.err


def test_plain_progress_lines_are_periodic():
    import io

    from spiraljax.train.progress import PlainProgress, progress_bar

    assert isinstance(progress_bar(10, 0, "x", enabled=True, file=io.StringIO()), PlainProgress)
    f = io.StringIO()
    bar = PlainProgress(100, initial=20, desc="run", file=f, interval=3600)
    for _ in range(30):
        bar.update(1)
        bar.set_postfix({"loss": "2.500"})
    bar.write("step 50: val loss 2.4")
    bar.close()
    lines = f.getvalue().splitlines()
    assert len(lines) == 2 and lines[0] == "run: step 21/100 (21%)" and lines[1].startswith("run: step 50/100 (50%), ")
    assert lines[1].endswith(" steps/s, loss=2.500") and "\r" not in f.getvalue()
    quiet = io.StringIO()
    bar = PlainProgress(10, desc="q", file=quiet, disable=True)
    bar.update(5)
    bar.close()
    assert quiet.getvalue() == ""
