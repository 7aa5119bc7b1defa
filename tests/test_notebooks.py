"""The notebooks: each ``notebooks/X.ipynb`` holds the same cells as its jupytext-paired ``X.py``
(checked without jupytext, which is a development tool only), and each one runs from notebooks/ (the
directory Jupyter starts the kernel in) as well as from the project root."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, subprocess_env

NOTEBOOKS = ROOT / "notebooks"
NAMES = ["quickstart", "families"]
# Lines every successful run prints (one per section, so a notebook cut short fails).
EXPECTED = {
    "quickstart": ["logits (2, 128, 256)", "'bpc':"],
    "families": ["sparse vs dense max |diff|", "glyph ids", "R(sync)", "scan vs chunked", "recall accuracy", "dream:"],
}

Cell = tuple[str, str, str]  # (cell_type, title, source)


def py_cells(text: str) -> list[Cell]:
    """The cells of a percent-format script: the jupytext YAML header (``# ---`` ... ``# ---``) is
    skipped, a ``# %%`` line opens a code cell (its text, the title) and ``# %% [markdown]`` a markdown
    cell whose ``# `` comment prefixes are stripped; blank lines around a cell are not part of it."""
    lines = text.splitlines()
    if lines and lines[0] == "# ---":
        lines = lines[lines.index("# ---", 1) + 1 :]
    cells: list[tuple[str, str, list[str]]] = []
    for line in lines:
        if line.startswith("# %%"):
            marker = line[4:].strip()
            kind = "markdown" if marker.startswith("[markdown]") else "code"
            cells.append((kind, marker.removeprefix("[markdown]").strip(), []))
        elif cells:
            cells[-1][2].append(line)
        else:
            assert not line.strip(), f"text before the first '# %%' cell: {line!r}"
    out = []
    for kind, title, body in cells:
        if kind == "markdown":
            assert all(ln == "#" or ln.startswith("# ") or not ln for ln in body), f"markdown cell {body[:1]}"
            body = [ln[2:] if ln.startswith("# ") else "" for ln in body]
        out.append((kind, title, "\n".join(body).strip("\n")))
    return out


def ipynb_cells(nb: dict) -> list[Cell]:
    """The (cell_type, title, source) of each cell of a parsed .ipynb."""
    return [(c["cell_type"], c["metadata"].get("title", ""), "".join(c["source"]).strip("\n")) for c in nb["cells"]]


def load_ipynb(name: str) -> dict:
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_matches_its_paired_script(name: str) -> None:
    """Editing one side only fails here: re-sync with ``jupytext --sync notebooks/*.py``."""
    script = py_cells((NOTEBOOKS / f"{name}.py").read_text(encoding="utf-8"))
    notebook = ipynb_cells(load_ipynb(name))
    assert len(script) == len(notebook), (
        f"{name}: {len(script)} cells in .py, {len(notebook)} in .ipynb (run jupytext --sync)"
    )
    for i, (a, b) in enumerate(zip(script, notebook)):
        assert a == b, f"{name}: cell {i} differs between .py and .ipynb (run jupytext --sync notebooks/*.py)"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_paired_and_stored_without_outputs(name: str) -> None:
    nb = load_ipynb(name)
    assert nb["metadata"]["jupytext"]["formats"] == "ipynb,py:percent"
    assert "formats: ipynb,py:percent" in (NOTEBOOKS / f"{name}.py").read_text(encoding="utf-8")
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{name}: outputs stored"
            assert "sys.path" not in "".join(cell["source"]), f"{name}: the package is installed; no sys.path edits"


def run_notebook(name: str, tmp_path: Path) -> str:
    """Run the .ipynb's code cells in order, in one fresh interpreter started in notebooks/ with no
    ``__file__`` (as a Jupyter kernel does); temporary run directories land in ``tmp_path``."""
    code = "\n\n".join(src for kind, _, src in ipynb_cells(load_ipynb(name)) if kind == "code")
    out = subprocess.run(
        [sys.executable, "-"],
        input=code,
        cwd=NOTEBOOKS,
        env=subprocess_env() | {"TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def check_output(name: str, stdout: str) -> None:
    missing = [s for s in EXPECTED[name] if s not in stdout]
    assert not missing, f"{name}: output lacks {missing}:\n{stdout[-2000:]}"


def test_quickstart_runs_from_the_notebooks_directory(tmp_path: Path) -> None:
    """About 30 s on 2 busy cores (a 40-step training run), so it stays in the fast suite."""
    check_output("quickstart", run_notebook("quickstart", tmp_path))


@pytest.mark.slow
def test_families_runs_from_the_notebooks_directory(tmp_path: Path) -> None:
    """About 90 s on 2 busy cores (compiles every family), hence slow; the fast suite tests the same
    functions on tiny shapes."""
    check_output("families", run_notebook("families", tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_scripts_run_from_the_project_root(name: str, tmp_path: Path) -> None:
    """``python notebooks/X.py`` from the project root, as the README shows."""
    out = subprocess.run(
        [sys.executable, str(NOTEBOOKS / f"{name}.py")],
        cwd=ROOT,
        env=subprocess_env() | {"TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    check_output(name, out.stdout)
