#!/usr/bin/env bash
# One prepared GPU run (issue #26 §4): MFU of the dense baseline and the Hebbian LM, spiral vs dense
# attention at T = 8k-64k, chunked fast weights vs the scan. A few minutes on one H100/H200.
#
#   bash benchmarks/gpu.sh            # on the lent machine, from the repository root
#   bash benchmarks/gpu.sh --quick    # toy sizes (any machine)
#
# The lent machine's image has JAX (CUDA), Flax, Optax, Orbax, Chex, PyYAML but not pydantic. Carry it
# as wheels: here, `python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12
# --implementation cp --platform manylinux_2_17_x86_64 -d .whl pydantic==2.14.4 pydantic_core==2.50.5
# annotated-types==0.8.0 typing-inspection==0.4.5` (versions of requirements.lock; /.whl/ is ignored),
# then `run` with carry [".whl"]. Output: the tables on stdout, and $OUT/gpu.json where $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import pydantic" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "benchmarks/gpu.sh: pydantic is missing and no .whl/ folder was carried (see the comment at the top)" >&2
    exit 1
  fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
exec "$PY" benchmarks/gpu.py ${OUT:+--json-out "$OUT/gpu.json"} "$@"
