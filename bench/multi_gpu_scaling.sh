#!/usr/bin/env bash
# Multi-worker scaling of `kvx run` and the layer-split check, in one run of this script.
#   bench/multi_gpu_scaling.sh [KVX_BINARY=build/kvx] [gpu|cpu]   (default: gpu when nvidia-smi sees 2+ GPUs)
# 1. The same sweep (perplexity jobs, small-code-llama, one model so the split is the only
#    variable) runs twice in fresh databases: 1 worker, then 2 workers (`devices: auto` with
#    CUDA_VISIBLE_DEVICES=0 then 0,1; on CPU `devices: cpu`, workers 1 then 2). Prints both wall
#    times and the ratio (target on 2 GPUs: <= 0.55).
# 2. Split vs single: `kvx eval` perplexity on one device and split over two (cuda:0 vs
#    cuda:0,cuda:1 in bfloat16; cpu vs cpu,cpu in float32) must agree (bf16: 1e-2 relative;
#    fp32: 1e-6).
# 3. Kill one worker (kill -9 of a worker process of the 2-worker run) mid-sweep: the sweep
#    still ends with every job done exactly once.
# Env: JOBS_SEQ (seq_len, default 1024 GPU / 256 CPU), WINDOWS (max_windows, 24 GPU / 3 CPU),
#      MODEL (model folder), DATASET (text file).
set -euo pipefail
cd "$(dirname "$0")/.."
KVX=$(realpath "${1:-build/kvx}")
MODE=${2:-}
if [ -z "$MODE" ]; then
  n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
  if [ "${n:-0}" -ge 2 ]; then MODE=gpu; else MODE=cpu; fi
fi
MODEL=$(realpath "${MODEL:-data/models/small-code-llama}")
DATASET=$(realpath "${DATASET:-data/wikitext-2/test.txt}")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [ "$MODE" = gpu ]; then
  SEQ=${JOBS_SEQ:-1024}; WIN=${WINDOWS:-24}; DTYPE=bfloat16; DEVICES=auto; TOL=1e-2
  SINGLE=cuda:0; SPLIT=cuda:0,cuda:1
else
  SEQ=${JOBS_SEQ:-256}; WIN=${WINDOWS:-3}; DTYPE=float32; DEVICES=cpu; TOL=1e-6
  SINGLE=cpu; SPLIT=cpu,cpu
fi
sweep() {  # sweep NAME WORKERS
  cat > "$TMP/$1.yaml" <<YAML
name: scaling
db: $1.db
devices: $DEVICES
workers: $2
models: [{name: m, path: $MODEL}]
datasets: [{name: d, path: $DATASET}]
protocols: [{name: perplexity, seq_len: $SEQ, chunk: 64, max_windows: $WIN, dtype: $DTYPE}]
methods:
  - {name: fp16, key: none, value: none}
  - name: kvq
    key:   {type: kvq, bits: [2, 4]}
    value: {type: kvq, bits: [2, 4]}
  - name: kvq8
    key:   {type: kvq, bits: 8}
    value: {type: kvq, bits: [4, 8]}
YAML
  echo "$TMP/$1.yaml"
}
timed() {  # timed LABEL CUDA_VISIBLE_DEVICES CONFIG -> seconds on stdout
  local t0 t1
  t0=$(date +%s.%N)
  if [ -n "$2" ]; then CUDA_VISIBLE_DEVICES=$2 "$KVX" run "$3" > "$TMP/$1.out" 2>&1 || { cat "$TMP/$1.out" >&2; exit 1; }
  else "$KVX" run "$3" > "$TMP/$1.out" 2>&1 || { cat "$TMP/$1.out" >&2; exit 1; }; fi
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}
echo "mode $MODE: $(basename "$MODEL"), perplexity seq_len $SEQ x $WIN windows, dtype $DTYPE, 7 jobs per sweep"
if [ "$MODE" = gpu ]; then
  t1=$(timed one 0 "$(sweep one 1)")
  t2=$(timed two 0,1 "$(sweep two 1)")
else
  t1=$(timed one "" "$(sweep one 1)")
  t2=$(timed two "" "$(sweep two 2)")
fi
grep -h "with" "$TMP/one.out" "$TMP/two.out" | sed 's/^/  /'
n1=$(sqlite3 "$TMP/one.db" "SELECT COUNT(*) FROM results"); n2=$(sqlite3 "$TMP/two.db" "SELECT COUNT(*) FROM results")
# Same jobs, same numbers: the two sweeps' ppl must agree job by job.
diffs=$(sqlite3 "$TMP/two.db" "ATTACH '$TMP/one.db' AS o; SELECT COUNT(*) FROM results r JOIN o.results q ON q.job_key=r.job_key \
  WHERE abs(json_extract(r.metrics,'\$.ppl') - json_extract(q.metrics,'\$.ppl')) > 1e-6 * json_extract(q.metrics,'\$.ppl')")
awk -v a="$t1" -v b="$t2" -v m="$MODE" -v n1="$n1" -v n2="$n2" -v d="$diffs" 'BEGIN {
  printf "scaling (%s): 1 worker %.2f s (%d jobs), 2 workers %.2f s (%d jobs), ratio %.3f (target <= 0.55 on 2 GPUs); ppl mismatches %d\n",
         m, a, n1, b, n2, b / a, d }'

# Kill one worker mid-sweep: nothing is lost.
cfg=$(sweep kill 2)
if [ "$MODE" = gpu ]; then CUDA_VISIBLE_DEVICES=0,1 "$KVX" run "$cfg" > "$TMP/kill.out" 2>&1 & else "$KVX" run "$cfg" > "$TMP/kill.out" 2>&1 & fi
runner=$!
for _ in $(seq 600); do
  [ "$(sqlite3 "$TMP/kill.db" "SELECT COUNT(*) FROM jobs WHERE status='running'" 2>/dev/null || echo 0)" -ge 1 ] && break
  sleep 0.1
done
victim=$(pgrep -P "$runner" | head -1 || true)
[ -n "$victim" ] && kill -9 "$victim"
wait "$runner" || true
nk=$(sqlite3 "$TMP/kill.db" "SELECT COUNT(*) FROM results"); dk=$(sqlite3 "$TMP/kill.db" "SELECT COUNT(DISTINCT job_key) FROM results")
tk=$(sqlite3 "$TMP/kill.db" "SELECT COUNT(*) FROM jobs")
echo "kill check: killed worker pid ${victim:-none}; $nk results for $tk jobs ($dk distinct): $([ "$nk" = "$tk" ] && [ "$dk" = "$tk" ] && echo OK || echo LOST)"

# Split vs single perplexity.
ev() { "$KVX" eval --model "$MODEL" --dataset "$DATASET" --method none --device "$1" --dtype "$DTYPE" \
         --seq-len "$SEQ" --max-windows 4 --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["metrics"]["ppl"])'; }
p1=$(ev "$SINGLE"); p2=$(ev "$SPLIT")
awk -v a="$p1" -v b="$p2" -v s="$SINGLE" -v t="$SPLIT" -v tol="$TOL" 'BEGIN {
  r = (b - a) / a; if (r < 0) r = -r;
  printf "split check: ppl %s = %.6f, %s = %.6f, relative diff %.2e (tolerance %s): %s\n", s, a, t, b, r, tol, r <= tol ? "OK" : "MISMATCH";
  exit r <= tol ? 0 : 1 }'
