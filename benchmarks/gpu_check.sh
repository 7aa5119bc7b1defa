#!/usr/bin/env bash
# The test suite on a GPU, in one command, with the failures listed (-rf) and one summary line for the docs.
#
#   bash benchmarks/gpu_check.sh fetch     # HERE (with network): the wheels the GPU image lacks, into .whl/
#   bash benchmarks/gpu_check.sh           # THERE (on the GPU machine, repository root): install them, run the suite
#
# The lent GPU machines (see /work/.library/device/) have JAX with CUDA, Flax, Optax, Orbax, pytest and
# pytest-xdist but no pydantic, and no network: `fetch` downloads pydantic and its three dependencies at the
# versions of requirements.lock for CPython 3.12, the image's Python. Carry `.whl` with the run (it is
# ignored by git: add `/.whl/` to .git/info/exclude once). The image's JAX (0.11.x in 2026-11) is newer
# than the locked 0.10.2: a failure can be a version difference as well as a GPU one; the summary line
# names the versions.
#
# Every test runs with float32 matrix products at "highest" precision (tests/conftest.py), so TF32 is
# off. Tests that only make sense on a CPU (forced host devices, gloo multi-process runs, host-memory page
# faults) are expected in the failure list unless they skip themselves; read -rf's reasons.
# Output: the log in $OUT/gpu_tests.log (or /tmp), the last line "GPU check: ..." to paste into
# docs/notes/reliability.md. Exit status: pytest's.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=.whl

if [ "${1:-}" = "fetch" ]; then
  mkdir -p "$WHEELS"
  for pkg in pydantic pydantic_core annotated-types typing-inspection; do
    version=$(grep -i "^${pkg}==" requirements.lock | head -1 | cut -d= -f3)
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$WHEELS" "${pkg}==${version}" || exit 1
  done
  ls -l "$WHEELS"
  exit 0
fi

SITE=/tmp/spiraljax_site
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl || exit 1
  export PYTHONPATH="$SITE:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # several pytest workers share the one GPU
export PYTHONUNBUFFERED=1
LOG_DIR=${OUT:-/tmp}
"$PY" -c "import jax, sys; d = jax.devices(); print('devices:', d); sys.exit(0 if d[0].platform == 'gpu' else 3)" \
  || { echo "GPU check: no GPU visible to JAX"; exit 3; }
started=$(date +%s)
# -p no:cacheprovider: the tree may be read-only; --dist loadfile keeps each file's module fixtures in one worker
"$PY" -m pytest -rf -q -n "${WORKERS:-8}" --dist loadfile -p no:cacheprovider -o addopts='-m "not slow"' \
  2>&1 | tee "$LOG_DIR/gpu_tests.log"
status=${PIPESTATUS[0]}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
versions=$("$PY" -c 'import jax, flax, orbax.checkpoint as o; print(f"jax {jax.__version__}, flax {flax.__version__}, orbax {o.__version__}")' 2>/dev/null)
commit=$(git rev-parse --short HEAD 2>/dev/null || cat .commit 2>/dev/null || echo "?")
echo "GPU check: $(tail -1 "$LOG_DIR/gpu_tests.log" | tr -d '=' | sed 's/^ *//;s/ *$//') on ${gpu:-a GPU} ($versions), commit $commit, $(( $(date +%s) - started )) s"
exit "$status"
