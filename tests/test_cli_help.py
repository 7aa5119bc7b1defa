"""Every command-line entry point prints its --help and exits 0 (argparse expands '%' in help strings,
so one stray percent sign in a budget description used to crash ``--help`` with a traceback)."""

from __future__ import annotations

import importlib

import pytest

import evaluate
import train

ENTRY_POINTS = {
    "train.py": train.main,
    "evaluate.py": evaluate.main,
    "python -m spiraljax.report": lambda argv: importlib.import_module("spiraljax.report").main(argv),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_help_prints_and_exits_zero(name, capsys):
    with pytest.raises(SystemExit) as stop:
        ENTRY_POINTS[name](["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:"), out[:200]
