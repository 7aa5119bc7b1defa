"""``python -m spiraljax.report --budget long-smoke`` / ``sparse-smoke``: the long-context report pipeline at
tiny sizes (every entry, the long_context suite on every run, the generated block in docs/, the plots),
and its pure parts: BPC at equal wall time, the sparse line-up's windows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from spiraljax.report import render
from spiraljax.report.long import (
    LONG_BUDGETS,
    LONG_ENTRIES,
    bpc_at_seconds,
    entries,
    equal_time,
    fair_window,
    run_overrides,
)
from spiraljax import config


def test_bpc_at_equal_wall_time_interpolates_the_curve():
    curve = [(10, 5.0, 4.0), (20, 9.0, 3.0), (30, 13.0, 2.5)]  # (step, train_seconds, BPC)
    assert bpc_at_seconds(curve, 7.0) == pytest.approx(3.5)
    assert bpc_at_seconds(curve, 13.0) == pytest.approx(2.5)
    assert bpc_at_seconds(curve, 4.0) is None  # before the first evaluation
    runs = {"a": {0: {"curve": curve}, 1: {"curve": curve[:2]}}, "b": {0: {"curve": [(10, 2.0, 5.0), (20, 30.0, 4.0)]}}}
    assert equal_time(runs, {"a": "", "b": ""}) == {"": 9.0}  # the shortest run's total training time
    assert equal_time(runs, {"a": "x", "b": "y"}) == {"x": 9.0, "y": 30.0}


def test_the_lineups():
    assert [e.name for e in LONG_ENTRIES] == [
        "transformer",
        "transformer_xl",
        "transformer_local",
        "spiralformer",
        "hebbian",
        "kssm_v3",
    ]
    cfgs = {e.name: config.load(e.config) for e in LONG_ENTRIES}
    assert {c.data.source for c in cfgs.values()} == {"longdocs"}
    assert len({(c.model.seq_len, c.train.batch_size, c.train.steps, c.train.seed) for c in cfgs.values()}) == 1
    assert [n for n, c in cfgs.items() if not c.train.carry_state] == ["transformer"]
    assert cfgs["transformer_local"].model.window == fair_window(512) == 10
    sparse = entries(LONG_BUDGETS["sparse"])
    assert len(sparse) == 6
    local = config.load(sparse[4].config, run_overrides(sparse[4], LONG_BUDGETS["sparse"], 120, 0))
    assert (local.model.seq_len, local.model.window, local.train.batch_size) == (4096, 13, 1)
    spiral = config.load(sparse[0].config, run_overrides(sparse[0], LONG_BUDGETS["sparse"], 120, 0))
    assert (spiral.model.seq_len, spiral.train.batch_size, spiral.train.eval_every) == (1024, 2, 20)


def _report(tmp: Path, budget: str) -> tuple[Path, Path]:
    from spiraljax.report import main

    (tmp / "README.md").write_text("# x\n")
    page = tmp / "docs" / "results" / "long_context.md"
    page.parent.mkdir(parents=True)
    page.write_text(f"# x\n<!-- report:{budget}:begin -->\n<!-- report:{budget}:end -->\n")
    cwd = Path.cwd()
    os.chdir(tmp)
    try:
        assert main(["--budget", budget, "--out", str(tmp / "reports"), "--runs", str(tmp / "runs"), "--readme"]) == 0
    finally:
        os.chdir(cwd)
    return tmp / "reports" / budget, page


def _hebbian_carries() -> bool:
    from spiraljax.models.hebbian import HebbianLM

    return hasattr(HebbianLM, "initial_state")


@pytest.fixture(scope="module")
def long_smoke(tmp_path_factory):
    return _report(tmp_path_factory.mktemp("long"), "long-smoke")


@pytest.mark.skipif(not _hebbian_carries(), reason="hebbian_long carries state: needs the Hebbian LM's initial_state")
def test_long_smoke_report_covers_every_entry_seed_and_part(long_smoke):
    out, page = long_smoke
    report = json.loads((out / "report.json").read_text())
    budget = LONG_BUDGETS["long-smoke"]
    assert list(report["runs"]) == [e.name for e in LONG_ENTRIES]
    assert len(report["data_sha256"]) == 1
    for name, seeds in report["runs"].items():
        assert sorted(seeds) == [str(s) for s in range(budget.seeds)], name
        for r in seeds.values():
            assert r["curve"][-1][0] == budget.steps and r["curve"][-1][1] > 0 and np.isfinite(r["final_bpc"])
            lc = r["long_context"]
            assert set(lc["position"]["buckets"]["0-256"]) >= {"carried", "reset", "gap", "tokens"}
            assert lc["stateful"]
            assert ("by_length" in lc["extrapolation"]) == (
                name in ("transformer", "transformer_xl", "transformer_local", "spiralformer")
            )
            assert set(lc["recall"]["by_distance"]) == {"1", "2"}
            assert r["bpc_at_equal_time"] is not None or r["curve"][0][1] > report["equal_time_s"][""]
    md = (out / "report.md").read_text()
    bpcs = [r["final_bpc"] for r in report["runs"]["kssm_v3"].values()]
    assert render.fmt_ms(bpcs) in md
    for fig in ("seconds", "position", "gap", "extrapolation", "recall"):
        assert (out / f"{fig}.png").stat().st_size > 0
    block = page.read_text()
    assert render.fmt_ms(bpcs) in block and report["data_sha256"][0] in block and "budget `long-smoke`" in block
    assert "equal wall time" in block and "| kssm_v3 | 1 |" in block  # the recall table


def test_sparse_smoke_report(tmp_path):
    out, page = _report(tmp_path, "sparse-smoke")
    report = json.loads((out / "report.json").read_text())
    assert list(report["runs"]) == [
        "spiralformer_T64",
        "transformer_local_T64",
        "transformer_T64",
        "spiralformer_T128",
        "transformer_local_T128",
        "transformer_T128",
    ]
    assert set(report["equal_time_s"]) == {"T64", "T128"}
    assert all(
        r["long_context"]["recall"] == {"skipped": "probe_rows=0"} for s in report["runs"].values() for r in s.values()
    )
    assert "T128: " in page.read_text() and (out / "seconds.png").is_file()


def test_only_takes_the_budgets_own_entries(capsys):
    from spiraljax.report import main

    assert main(["--budget", "long-smoke", "--only", "transformer_recall"]) == 2
    assert "unknown entries ['transformer_recall']" in capsys.readouterr().err
