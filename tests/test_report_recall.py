"""``python -m spiraljax.report --budget recall``: state-size counting, first-query scoring, the smoke budget."""

from __future__ import annotations

import numpy as np
import pytest

from spiraljax import config
from spiraljax.report import recall_state as R


def _model_cfg(name: str, budget: str = "recall", length: int = 256):
    entry = next(e for e in R.RECALL_LINEUP if e.name == name)
    return config.load(None, R.run_overrides(entry, R.RECALL_BUDGETS[budget], 0, length)).model


def test_state_bytes_by_hand():
    """Dense, d 64, 2 layers, 2 heads of 32, T 256: per layer k and v [256, 2, 32] float32, valid [256] bool,
    prev_key [2, 32] float32 → 2·(2·256·2·32·4 + 256 + 2·32·4) = 263,168 bytes; at T 1024 the cache is 4×.
    K-SSM v3 (2 layers × 64 oscillators): theta [2, 64] float32 + started [1] bool = 513 bytes, any T."""
    assert R.state_bytes(_model_cfg("transformer")) == 2 * (2 * 256 * 2 * 32 * 4 + 256 + 2 * 32 * 4)
    assert R.state_bytes(_model_cfg("transformer", length=1024)) == 2 * (2 * 1024 * 2 * 32 * 4 + 1024 + 2 * 32 * 4)
    assert R.state_bytes(_model_cfg("kssm_v3")) == 2 * 64 * 4 + 1 == R.state_bytes(_model_cfg("kssm_v3", length=1024))
    # byte-level delta memory: memory [2 layers, 2 heads, 32, 32] + history [2, 1 slot, 64] + valid [1] + pos
    # int32 + latent [64] + started: independent of T
    delta = 2 * 2 * 32 * 32 * 4 + 2 * 1 * 64 * 4 + 1 + 4 + 64 * 4 + 1
    assert R.state_bytes(_model_cfg("fw_delta")) == delta == R.state_bytes(_model_cfg("fw_delta", length=1024))


def test_first_query_scoring_on_a_hand_made_example():
    """``A 1 B 2 | A 1 A 1 B 3``: targets at the queries are 1, 1, 2; first queries are the first A and the B.
    A prediction right on the first A, wrong on the second A, wrong on B scores 1/3 of all and 1/2 of first."""
    a, b, one, two = 65, 66, 129, 130
    inputs = np.array([[a, one, b, two, a, one, a, one, b]])
    targets = np.array([[one, b, two, a, one, a, one, b, two]])
    mask = np.array([[0, 0, 0, 0, 1, 0, 1, 0, 1]], np.float32)
    pred = targets.copy()
    pred[0, 6] = 7  # second query of A wrong
    pred[0, 8] = one  # B's (first) query wrong
    got = R.score(pred, {"inputs": inputs, "targets": targets, "mask": mask})
    assert got == {"hits": 1.0, "total": 3.0, "first_hits": 1.0, "first_total": 2.0}


def test_recall_smoke_budget_end_to_end(tmp_path):
    """Every line-up entry trains 3 steps on 2 seeds, is scored on every cell, and the report is written;
    a second build reuses the saved runs (nothing retrained)."""
    from spiraljax.report import render_recall

    budget = R.RECALL_BUDGETS["recall-smoke"]
    logs: list[str] = []
    report = R.build_recall_report(
        budget, None, "recall-smoke", tmp_path / "reports", tmp_path / "runs", command="test", log=logs.append
    )
    assert set(report["runs"]) == R.entry_names() and all(len(s) == 2 for s in report["runs"].values())
    for seeds in report["runs"].values():
        for r in seeds.values():
            assert set(r["cells"]) == {"T32_p2", "T32_p4", "T64_p4"}
            for c in r["cells"].values():
                assert 0.0 <= c["first_accuracy"] <= 1.0 and 0.0 <= c["accuracy"] <= 1.0 and c["first_queries"] > 0
    out = tmp_path / "reports" / "recall-smoke"
    assert (out / "report.md").is_file() and (out / "recall_vs_state.png").is_file()
    text = render_recall.block(report)
    assert "| transformer |" in text and "First-query accuracy per seed" not in text  # no T256_p16 cell here
    commit = report["provenance"]["git"]["commit"]
    assert f"commit {commit[:7]}" in text if commit else "commit ?" in text
    # reused runs may come from older code: the block names the commit each run was trained at
    assert f"the runs were trained at commit {commit[:7] if commit else 'unknown'}" in text
    logs.clear()
    R.build_recall_report(
        budget, None, "recall-smoke", tmp_path / "reports", tmp_path / "runs", command="test", log=logs.append
    )
    assert not any(" s0: " in line for line in logs)  # reused


@pytest.mark.parametrize("argv", [["--budget", "recall", "--only", "nope"]])
def test_report_cli_refuses_unknown_recall_entries(argv, capsys):
    from spiraljax.report import main

    assert main(argv) == 2
    assert "unknown entries" in capsys.readouterr().err
