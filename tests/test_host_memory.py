"""spiraljax.host_memory: a step's scratch memory is reused instead of page-faulted in again, numbers
are unchanged, and the switch does nothing where it cannot work (each case in a fresh interpreter,
since the settings are per process and fixed when JAX's backend starts)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from tests.conftest import subprocess_env

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the settings are glibc's"
)

# a jitted function whose 64 MiB intermediate h lives in XLA's scratch buffer (it is neither input nor
# output); page faults per call: the median of calls 21-40. With reuse the heap takes a few calls to
# settle (a freed block next to a live one is too small for the next aligned request, so the heap
# grows by a scratch until neighbouring holes merge: 2-6 faulting calls in 25 runs, one of them at
# call 25), so a single call may still fault; the median does not
PROBE = """
import json, os, resource, statistics, sys
from spiraljax.host_memory import reuse_host_memory
import jax, jax.numpy as jnp
if os.environ.get("START_BACKEND_FIRST"):
    jnp.ones(1).block_until_ready()
applied = reuse_host_memory()
x = jnp.ones((1024, 32)); w = jnp.ones((32, 16384)) * 1e-3; v = jnp.ones((16384, 4)) * 1e-3
f = jax.jit(lambda x, w, v: (x @ w) @ v)
faults = []
for _ in range(40):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out = f(x, w, v).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults_per_call": statistics.median(faults[20:]), "out": float(out.sum())}))
"""


def probe(**env: str) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", PROBE], env={**subprocess_env(), **env}, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_scratch_is_reused_and_results_unchanged():
    reused = probe(SPIRALJAX_REUSE_HOST_MEMORY="1")
    default = probe(SPIRALJAX_REUSE_HOST_MEMORY="0")
    assert reused["applied"] and not default["applied"]
    # glibc's default maps the 64 MiB scratch afresh each call: ≥ 16k page faults of 4 KiB
    assert default["faults_per_call"] > 8000, default
    assert reused["faults_per_call"] < 0.05 * default["faults_per_call"], (reused, default)  # measured: 0
    assert reused["out"] == default["out"]


def test_too_late_once_the_backend_started():
    late = probe(SPIRALJAX_REUSE_HOST_MEMORY="1", START_BACKEND_FIRST="1")
    assert not late["applied"]
    assert late["faults_per_call"] > 8000, late  # nothing changed: the default behaviour
