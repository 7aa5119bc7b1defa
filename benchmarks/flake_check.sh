#!/usr/bin/env bash
# Flake count: the reliability, checkpoint and resume tests N times in a row, each run beside a CPU-heavy
# job (a busy loop at nice 10, so the tests keep their share but never run on an idle core), one line per run.
#
#   bash benchmarks/flake_check.sh 20            # prints "run i/N: <pytest summary>" and "flake check: k of N runs passed"
#   PYTHON=.venv/bin/python bash benchmarks/flake_check.sh 5
#
# The selection: tests/test_reliability.py (all of it) and the checkpoint/resume tests of tests/test_train.py.
# Logs of failing runs are kept in ${LOG_DIR:-/tmp}/flake_run_<i>.log.
set -uo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
PY=${PYTHON:-python}
LOG_DIR=${LOG_DIR:-/tmp}
SELECT=(tests/test_reliability.py tests/test_train.py -k "test_reliability or resume or checkpoint or corrupt or signal or lock or rotation or best or orbax")
nice -n 10 "$PY" -c "while True: pass" &
busy=$!
trap 'kill $busy 2>/dev/null' EXIT
passed=0
for i in $(seq 1 "$N"); do
  log="$LOG_DIR/flake_run_$i.log"
  start=$(date +%s)
  "$PY" -m pytest -q -p no:xdist -p no:cacheprovider -o addopts='-m "not slow"' "${SELECT[@]}" > "$log" 2>&1
  status=$?
  summary=$(grep -E "passed|failed|error" "$log" | tail -1)
  echo "run $i/$N: status $status, $(( $(date +%s) - start )) s, load $(cut -d' ' -f1 /proc/loadavg): ${summary:-(no summary)}"
  if [ "$status" = 0 ]; then passed=$((passed + 1)); rm -f "$log"; fi
done
echo "flake check: $passed of $N runs passed"
[ "$passed" = "$N" ]
