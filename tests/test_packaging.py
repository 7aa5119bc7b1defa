"""requirements.txt (ranges for users), pyproject.toml (the same ranges) and requirements.lock (the exact
stack the README's numbers were made with) must agree."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _lines(path: Path) -> list[str]:
    return [ln.split("#")[0].strip() for ln in path.read_text().splitlines() if ln.split("#")[0].strip()]


def _ranges() -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, _lines(ROOT / "requirements.txt"))}


def _lock() -> dict[str, str]:
    pins = {}
    for line in _lines(ROOT / "requirements.lock"):
        name, sep, version = line.partition("==")
        assert sep, f"requirements.lock: '{line}' is not an exact pin"
        pins[canonicalize_name(name)] = version
    return pins


def test_lock_pins_every_requirement_inside_its_range():
    ranges, pins = _ranges(), _lock()
    for name, req in ranges.items():
        assert name in pins, f"{name} missing from requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} outside {req.specifier}"


def test_pyproject_dependencies_are_the_requirement_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {canonicalize_name(r.name): str(r.specifier) for r in map(Requirement, project["dependencies"])}
    test_extra = project["optional-dependencies"]["test"]
    test = {canonicalize_name(r.name): str(r.specifier) for r in map(Requirement, test_extra)}
    assert {**deps, **test} == {n: str(r.specifier) for n, r in _ranges().items()}


def test_package_imports_from_any_directory(tmp_path):
    """``pip install -e .`` (the README's commands) makes ``import spiraljax`` work outside the project."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", "import spiraljax, pathlib; print(pathlib.Path(spiraljax.__file__).parent)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(ROOT / "spiraljax")
