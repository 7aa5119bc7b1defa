"""The report command (``python -m spiraljax.report``), run provenance and bit-exact determinism."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import TINY
from spiraljax import config
from spiraljax.eval import stats
from spiraljax.report import render
from spiraljax.report.lineup import BUDGETS, LM_ENTRIES, RECALL_ENTRIES


def test_mean_sd_is_the_sample_sd():
    m, s, n = stats.mean_sd([1.0, 2.0, 4.0, None])
    assert (m, n) == (7 / 3, 3)
    assert s == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    assert stats.mean_sd([3.0])[1] == 0.0
    assert render.fmt_ms([]) == "—"


def test_update_readme_rewrites_only_its_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- report:x:begin -->\nold numbers\n<!-- report:x:end -->\noutro\n")
    assert render.update_readme(readme, "x", "new numbers")
    assert readme.read_text() == "intro\n<!-- report:x:begin -->\nnew numbers\n<!-- report:x:end -->\noutro\n"
    assert not render.update_readme(readme, "other", "nothing")


def test_generated_blocks_are_found_in_readme_and_docs(tmp_path):
    (tmp_path / "docs" / "results").mkdir(parents=True)
    readme, page = tmp_path / "README.md", tmp_path / "docs" / "results" / "x.md"
    readme.write_text("# no block here\n")
    page.write_text("a\n<!-- report:x:begin -->\nold\n<!-- report:x:end -->\nb\n")
    (tmp_path / "docs" / "notes.md").write_text("<!-- report:y:begin -->\n<!-- report:y:end -->\n")
    assert render.holding_block(render.doc_files(tmp_path), "x") == [page]
    assert render.update_docs(render.doc_files(tmp_path), "x", "new") == [page]
    assert page.read_text() == "a\n<!-- report:x:begin -->\nnew\n<!-- report:x:end -->\nb\n"
    assert readme.read_text() == "# no block here\n"


def test_a_missing_block_is_refused_before_anything_is_trained(tmp_path, monkeypatch, capsys):
    from spiraljax.report import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("# no block\n")
    argv = ["--budget", "smoke", "--out", "reports", "--runs", "runs"]
    assert main([*argv, "--readme"]) == 2
    assert "README.md and docs/: no <!-- report:smoke:begin -->" in capsys.readouterr().err
    assert main([*argv, "--readme", "README.md", "docs/absent.md"]) == 2
    assert "README.md, docs/absent.md: no <!-- report:smoke:begin -->" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """``python -m spiraljax.report --budget smoke --readme`` once, in a temporary directory whose
    docs/results/report.md holds the generated block (found there by the search of README + docs/)."""
    import os

    from spiraljax.report import main

    tmp = tmp_path_factory.mktemp("report")
    (tmp / "README.md").write_text("# x\n")
    readme = tmp / "docs" / "results" / "report.md"
    readme.parent.mkdir(parents=True)
    readme.write_text("# x\n<!-- report:smoke:begin -->\n<!-- report:smoke:end -->\n")
    argv = ["--budget", "smoke", "--out", str(tmp / "reports"), "--runs", str(tmp / "runs"), "--readme"]
    cwd = Path.cwd()
    os.chdir(tmp)
    try:
        assert main(argv) == 0
    finally:
        os.chdir(cwd)
    assert (tmp / "README.md").read_text() == "# x\n"
    return tmp, argv, readme


def test_smoke_report_covers_every_family_seed_and_suite(smoke):
    tmp, _, readme = smoke
    out = tmp / "reports" / "smoke"
    report = json.loads((out / "report.json").read_text())
    budget = BUDGETS["smoke"]
    assert set(report["lm"]) == {e.name for e in LM_ENTRIES}
    assert set(report["recall"]) == {e.name for e in RECALL_ENTRIES}
    for name, seeds in report["lm"].items():
        assert sorted(seeds) == [str(s) for s in range(budget.seeds)], name
        for r in seeds.values():
            assert np.isfinite(r["final_bpc"]) and r["params"] > 0 and r["bpc_curve"][-1][0] == budget.steps
            assert r["wall_s"] > 0 and r["tokens_per_s"] > 0
    for e in LM_ENTRIES:
        for r in report["lm"][e.name].values():
            assert ("causality" in r) == e.causality
            if e.causality:
                m = r["causality"]["model"]
                assert {"variance", "intervention", "correlation", "share"} <= set(m)
                assert set(m["intervention"]["achieved_by_value"]) == set(m["intervention"]["nll_by_value"])
    for seeds in report["recall"].values():
        for r in seeds.values():
            assert set(r["recall"]) == {str(n) for n in budget.recall_lengths}
    md = (out / "report.md").read_text()
    bpcs = [r["final_bpc"] for r in report["lm"]["transformer"].values()]
    assert render.fmt_ms(bpcs) in md  # the table shows mean ± sd of exactly these seeds
    assert "**pass rate**" in md  # the causality table rendered every K-SSM seed
    assert (out / "bpc.png").stat().st_size > 0 and (out / "R.png").exists() and (out / "recall.png").exists()
    block = readme.read_text()
    assert render.fmt_ms(bpcs) in block and "budget `smoke`" in block and "jax " in block
    prov = report["provenance"]
    assert prov["versions"]["jax"] == jax.__version__ and prov["device"]["device_count"] >= 1


def test_rerun_reuses_runs_and_reproduces_numbers(smoke):
    from spiraljax.report import build_report

    tmp, _, _ = smoke
    before = json.loads((tmp / "reports" / "smoke" / "report.json").read_text())
    logged: list[str] = []
    again = build_report(BUDGETS["smoke"], out_dir=tmp / "reports", runs_dir=tmp / "runs", log=logged.append)
    assert not any(line.strip().startswith(("train", "resume")) for line in logged), logged
    assert sum("reuse" in line for line in logged) == sum(len(s) for s in before["lm"].values()) + sum(
        len(s) for s in before["recall"].values()
    )
    for name, seeds in before["lm"].items():
        for seed, r in seeds.items():
            assert again["lm"][name][int(seed)]["final_bpc"] == r["final_bpc"]


def test_two_runs_of_one_config_are_bit_identical(tmp_path):
    """Same config, same machine → the same parameters, bit for bit (CPU XLA is deterministic)."""
    from spiraljax.runs import load_run
    from spiraljax.train.loop import train

    cfg = config.load(
        None,
        TINY
        + [
            f"data.cache_dir={tmp_path / 'cache'}",
            "train.steps=6",
            "eval.sample_tokens=0",
            "checkpoint.every=6",
            "train.eval_every=6",
        ],
    )
    for name in ("a", "b"):
        train(cfg, tmp_path / name)
    info = json.loads((tmp_path / "a" / "run.json").read_text())  # provenance of every run
    assert info["versions"]["jax"] == jax.__version__ and info["device"]["platform"] == jax.default_backend()
    assert {"commit", "dirty"} <= set(info["git"]) and info["command"]
    assert info["device"]["host_cpu"].endswith(f"{os.cpu_count()} cores)")  # absolute times need the CPU
    pa, pb = (load_run(tmp_path / n, "latest")[1]["params"] for n in ("a", "b"))
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    seeded = config.load(
        None,
        TINY
        + [
            f"data.cache_dir={tmp_path / 'cache'}",
            "train.steps=6",
            "eval.sample_tokens=0",
            "checkpoint.every=6",
            "train.eval_every=6",
            "train.seed=1",
        ],
    )
    train(seeded, tmp_path / "c")
    pc = load_run(tmp_path / "c", "latest")[1]["params"]
    assert not all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pc))
    )
