"""Layers point one way: ``spiraljax.train`` never imports ``spiraljax.eval``; models, nn and ops import
neither, and models and data do not import each other (both read the glyph table from the neutral
``spiraljax.glyph_table``); the error types load without JAX or Orbax."""
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


@pytest.mark.parametrize("package, forbidden", [
    ("train", ("spiraljax.eval", "spiraljax.report", "spiraljax.experiment")),
    ("ops", ("spiraljax.train", "spiraljax.eval", "spiraljax.models", "spiraljax.nn", "spiraljax.data")),
    ("nn", ("spiraljax.train", "spiraljax.eval", "spiraljax.models", "spiraljax.data")),
    ("models", ("spiraljax.train", "spiraljax.eval", "spiraljax.data")),
    ("data", ("spiraljax.train", "spiraljax.eval", "spiraljax.models")),
])
def test_package_does_not_import_upward(package, forbidden):
    bad = {f"{path.name}: {name}" for path in (PACKAGE / package).glob("*.py")
           for name in imported_modules(path) if name.startswith(forbidden)}
    assert not bad, f"spiraljax.{package} imports a higher layer: {sorted(bad)}"


def test_the_checker_sees_lazy_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from spiraljax.eval.tone import zone_name\n    import spiraljax.report\n")
    assert imported_modules(source) == {"spiraljax.eval.tone", "spiraljax.report"}


def test_error_types_load_without_jax_or_orbax():
    code = ("import sys, spiraljax.errors as e; assert issubclass(e.ConfigError, e.UserError); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'orbax', 'flax')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
