"""The suite registry parses ``--opt`` values once (types, defaults, minimums) and the shared helpers of
the suites: validation batches, mean ± sd."""

from __future__ import annotations

import numpy as np
import pytest

from spiraljax.errors import DataError, SuiteError
from spiraljax.eval.lm import validation_batches
from spiraljax.eval.suites import EvalContext, Option, Suite, check_options


def make_suite(needs_run: bool = True) -> Suite:
    options = {"n": Option(int, 3, minimum=1), "xs": Option(list[float], [0.5]), "name": Option(str), "flag": bool}
    return Suite(
        "toy",
        lambda ctx, **kw: kw,
        needs_run=needs_run,
        options={k: v if isinstance(v, Option) else Option(v) for k, v in options.items()},
    )


def test_options_arrive_parsed_with_their_defaults():
    suite = make_suite()
    assert suite.fn(EvalContext(None)) == {"n": 3, "xs": [0.5], "name": None, "flag": None}
    got = suite.fn(EvalContext(None, options={"n": "7", "xs": "1, 2.5", "name": "a b", "flag": "yes"}))
    assert got == {"n": 7, "xs": [1.0, 2.5], "name": "a b", "flag": True}
    assert suite.values(EvalContext(None, options={"xs": [1, 2]}))["xs"] == [1.0, 2.0]  # a list from Python
    suite.values(EvalContext(None))["xs"].append(9.0)  # the caller's copy
    assert suite.values(EvalContext(None))["xs"] == [0.5]


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("n", "0", r"--opt n='0': suite 'toy' needs values ≥ 1"),
        ("n", "2.5", "expects a whole number"),
        ("xs", "1,x", "expects comma-separated numbers"),
        ("flag", "maybe", "expects true or false"),
    ],
)
def test_bad_values_are_refused_before_and_when_the_suite_runs(key, value, match):
    suite = make_suite()
    with pytest.raises(SuiteError, match=match):
        check_options([suite], {key: value})
    with pytest.raises(SuiteError, match=match):
        suite.fn(EvalContext(None, options={key: value}))


def test_unknown_keys_and_config_without_a_runless_suite_are_refused():
    with pytest.raises(SuiteError, match=r"unknown option 'm' \(options of toy: flag, n, name, xs\)"):
        check_options([make_suite()], {"m": "1"})
    with pytest.raises(SuiteError, match="--config is only used by suites that need no run directory"):
        check_options([make_suite()], {"config": "c.yaml"})
    check_options([make_suite(), make_suite(needs_run=False)], {"config": "c.yaml", "n": "2"})


class Split:
    """A validation split of ``batches`` batches of 3 sequences each."""

    def __init__(self, batches: int):
        self.batches = batches

    def val_batches(self):
        for i in range(self.batches):
            yield {"inputs": np.full((3, 4), i)}


def test_validation_batches_take_the_first_ones_and_repeat_only_when_asked():
    ids = lambda batches: [int(b["inputs"][0, 0]) for b in batches]  # noqa: E731
    assert ids(validation_batches(Split(4), 4)) == [0, 1]
    assert ids(validation_batches(Split(4), 6)) == [0, 1]
    assert ids(validation_batches(Split(2), 10)) == [0, 1]  # what the split has
    assert ids(validation_batches(Split(2), 10, repeat=True)) == [0, 1, 0, 1]  # read again until 10
    with pytest.raises(DataError, match="no validation batches"):
        validation_batches(Split(0), 5, repeat=True)
