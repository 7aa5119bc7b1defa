"""Provenance of a run: code version, library versions, platform and command line.

``run_info()`` is written to ``RUN/run.json`` by the trainer and printed by ``evaluate.py`` and the
report, so every number can be traced to the exact code and stack that produced it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout the package runs from.

    ``dirty`` counts tracked files only: run directories and caches are untracked and ignored.
    """
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


def versions() -> dict[str, str]:
    """Python and the installed versions of the numerical stack."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def host_cpu() -> str:
    """The host CPU as one string: model name, widest vector extension and core count
    (``"AMD EPYC (avx2, 2 cores)"``); absolute benchmark times are only comparable on the same one."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("flags", "Features"):  # x86, ARM
                flags = set(value.split())
                break
    except OSError:
        pass
    isa = next((f for f in ("avx512f", "avx2", "avx", "neon", "asimd") if f in flags), None)
    return f"{model} ({', '.join(x for x in (isa, f'{os.cpu_count()} cores') if x)})"


def device_info() -> dict[str, Any]:
    import jax

    return {
        "platform": jax.default_backend(),
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "device_kind": jax.devices()[0].device_kind,
        "machine": platform.machine(),
        "system": platform.system(),
        "host_cpu": host_cpu(),
    }


def run_info(argv: list[str] | None = None) -> dict[str, Any]:
    """Everything that identifies how a run was made (JSON-serialisable)."""
    return {
        "git": git_state(),
        "versions": versions(),
        "device": device_info(),
        "command": list(sys.argv if argv is None else argv),
    }


def write_run_info(run_dir: str | Path, resumed: bool = False, argv: list[str] | None = None) -> dict[str, Any]:
    """Write ``run.json``; a resumed run appends its own entry to ``resumes`` instead of overwriting."""
    path = Path(run_dir) / "run.json"
    info = run_info(argv)
    previous = read_run_info(run_dir) if resumed else None
    if previous:
        previous.setdefault("resumes", []).append(info)
        info = previous
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
    tmp.replace(path)
    return info


def read_run_info(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "run.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def describe(info: dict[str, Any] | None) -> str:
    """One line: commit (dirty?), versions, platform × devices."""
    if not info:
        return "provenance: unknown (no run.json)"
    g, v, d = info.get("git", {}), info.get("versions", {}), info.get("device", {})
    commit = (g.get("commit") or "no git")[:10] + (" (dirty)" if g.get("dirty") else "")
    stack = " ".join(f"{k}={v[k]}" for k in ("python", *PACKAGES) if k in v)
    return f"provenance: commit {commit}; {stack}; {d.get('platform', '?')} × {d.get('device_count', '?')}"
