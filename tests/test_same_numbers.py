"""benchmarks/same_numbers.py: K train steps saved, then compared bit for bit."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import same_numbers


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("same") / "a.npz"
    losses = same_numbers.run(str(out), str(ROOT / "configs/hebbian_tiny.yaml"), ["model.reasoning_steps=1"], 2)
    return out, losses


def test_run_saves_losses_and_every_state_leaf(saved):
    out, losses = saved
    with np.load(out) as a:
        assert list(a["losses"]) == losses and len(losses) == 2
        assert any("params" in k for k in a.files) and any("opt_state" in k for k in a.files)


def test_a_copy_is_bit_identical_and_one_ulp_is_not(saved, tmp_path):
    out, _ = saved
    with np.load(out) as a:
        arrays = {k: a[k] for k in a.files}
    np.savez(tmp_path / "same.npz", **arrays)
    assert same_numbers.compare(str(out), str(tmp_path / "same.npz")) == []
    key = next(k for k in arrays if "params" in k and arrays[k].dtype == np.float32)
    bumped = arrays[key].copy()
    bumped.flat[0] = np.nextafter(bumped.flat[0], np.float32(np.inf))
    np.savez(tmp_path / "ulp.npz", **{**arrays, key: bumped})
    assert [line.split(":")[0] for line in same_numbers.compare(str(out), str(tmp_path / "ulp.npz"))] == [key]
    assert same_numbers.main(["compare", str(out), str(tmp_path / "ulp.npz")]) == 1
    assert same_numbers.main(["compare", str(out), str(tmp_path / "same.npz")]) == 0


def test_bad_config_is_one_line(tmp_path, capsys):
    assert same_numbers.main(["run", str(tmp_path / "x.npz"), "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
