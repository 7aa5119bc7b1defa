"""Layers point one way (docs/architecture.md): ``spiraljax.train`` never imports ``spiraljax.eval``;
models, nn and ops import neither, and models and data do not import each other (both read the glyph
table from the neutral ``spiraljax.glyph_table``); eval imports neither train nor the report; losses
(shared by train and eval) import neither; ``spiraljax.runs`` (reading a run: eval, the report and
the trainer share it) imports no upper layer; config imports nothing of the package but the error
types; the error types load without JAX or Orbax."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "spiraljax"


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import``/``from … import`` in ``path`` names, lazy (in-function) ones included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


TOP = ("spiraljax.train", "spiraljax.eval", "spiraljax.report", "spiraljax.experiment", "spiraljax.launch")
RULES = {  # package or module → what it must not import
    "train": ("spiraljax.eval", "spiraljax.report", "spiraljax.experiment"),
    "ops": ("spiraljax.train", "spiraljax.eval", "spiraljax.models", "spiraljax.nn", "spiraljax.data"),
    "nn": ("spiraljax.train", "spiraljax.eval", "spiraljax.models", "spiraljax.data"),
    "models": ("spiraljax.train", "spiraljax.eval", "spiraljax.data"),
    "holographic": (*TOP, "spiraljax.models", "spiraljax.nn", "spiraljax.data"),
    "data": ("spiraljax.train", "spiraljax.eval", "spiraljax.models"),
    "eval": ("spiraljax.train", "spiraljax.report", "spiraljax.experiment", "spiraljax.launch"),
    "losses": TOP,
    "runs": (*TOP, "spiraljax.models", "spiraljax.nn", "spiraljax.data"),
    "old_layout": (*TOP, "spiraljax.models", "spiraljax.nn", "spiraljax.data", "spiraljax.runs"),
}
# The one edge still to remove: runs.load_run reads checkpoints with the Orbax helpers of
# train/checkpoint.py (managers, candidates, the restore routine) until they move into runs.py
# (docs/architecture.md).
KNOWN_EXCEPTIONS = {
    "runs": {"runs.py: spiraljax.train.checkpoint"},
}


def sources(name: str) -> list[Path]:
    """The files of ``spiraljax.<name>``: a package's modules, or the one module."""
    folder = PACKAGE / name
    return sorted(folder.glob("*.py")) if folder.is_dir() else [PACKAGE / f"{name}.py"]


def upward_imports(name: str, forbidden: tuple[str, ...]) -> set[str]:
    return {
        f"{path.name}: {module}"
        for path in sources(name)
        for module in imported_modules(path)
        if module.startswith(forbidden)
    }


@pytest.mark.parametrize("name", list(RULES))
def test_package_does_not_import_upward(name):
    found = upward_imports(name, RULES[name])
    known = KNOWN_EXCEPTIONS.get(name, set())
    assert not found - known, f"spiraljax.{name} imports a higher layer: {sorted(found - known)}"
    assert known <= found, f"spiraljax.{name}: exceptions no longer needed, drop them: {sorted(known - found)}"


def test_config_imports_nothing_of_the_package_but_the_error_types():
    """Families and sources register by subclassing config's classes, so config itself must not import
    them (it loads ``spiraljax.models`` / ``spiraljax.data`` by name when a family is looked up)."""
    found = {m for m in imported_modules(PACKAGE / "config.py") if m == "spiraljax" or m.startswith("spiraljax.")}
    assert found == {"spiraljax.errors"}, found


def test_every_layer_has_a_rule():
    layers = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert layers - set(RULES) == {"report"}  # the top layer: it may import every other one


def test_the_checker_sees_lazy_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from spiraljax.eval.tone import zone_name\n    import spiraljax.report\n")
    assert imported_modules(source) == {"spiraljax.eval.tone", "spiraljax.report"}


def test_error_types_load_without_jax_or_orbax():
    code = (
        "import sys, spiraljax.errors as e; assert issubclass(e.ConfigError, e.UserError); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'orbax', 'flax')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
