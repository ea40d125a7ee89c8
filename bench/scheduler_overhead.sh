#!/usr/bin/env bash
# Scheduler overhead of `kvx run`: N noop jobs (sleep_ms 0) on W worker processes, in a fresh
# database. Prints the wall time of the whole command (expansion, job insertion, worker start,
# claims, result writes) and per job. Target: < 20 ms/job.
#   bench/scheduler_overhead.sh [KVX_BINARY] [JOBS=1000] [WORKERS=2]
set -euo pipefail
KVX=${1:-build/kvx}
JOBS=${2:-1000}
WORKERS=${3:-2}
KVX=$(realpath "$KVX")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

values=$(seq -s ', ' 0 $((JOBS - 1)))
cat > "$TMP/bench.yaml" <<YAML
name: scheduler-overhead
db: bench.db
workers: $WORKERS
protocols:
  - {name: noop, sleep_ms: 0, value: [$values]}
YAML

start=$(date +%s.%N)
"$KVX" run "$TMP/bench.yaml" > "$TMP/out.txt" 2>&1 || { cat "$TMP/out.txt"; exit 1; }
end=$(date +%s.%N)
done_jobs=$(sqlite3 "$TMP/bench.db" "SELECT COUNT(*) FROM results" 2>/dev/null || echo "?")
awk -v s="$start" -v e="$end" -v n="$JOBS" -v w="$WORKERS" -v d="$done_jobs" 'BEGIN {
  t = e - s;
  printf "scheduler overhead: %d noop jobs (sleep_ms 0), %d workers, %s results\n", n, w, d;
  printf "wall %.2f s total, %.2f ms/job\n", t, 1000 * t / n;
}'
