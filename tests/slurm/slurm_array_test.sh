#!/usr/bin/env bash
# End-to-end Slurm test: starts a private single-node Slurm on localhost (munged with a key
# generated here, slurmctld + slurmd as root, no cgroups: proctrack/linuxproc, task/none),
# writes a sweep's array script with `kvx slurm`, submits it with `sbatch --wait`, merges the
# shard databases with `kvx merge` and checks that every job was done exactly once.
# Usage: slurm_array_test.sh KVX_BIN [ARRAY_TASKS]. Exit 77 (ctest SKIP) when slurm-wlm or
# munge is not installed or not root. Everything lives in a temp dir, removed at the end
# (KVX_KEEP=1 keeps it); daemons are stopped by pid.
set -euo pipefail
KVX=${1:?usage: slurm_array_test.sh KVX_BIN [ARRAY_TASKS]}
N=${2:-3}
skip() { echo "SKIP: $*"; exit 77; }
for b in slurmctld slurmd sbatch sinfo munged; do
  command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || skip "$b not installed (apt-get install slurm-wlm munge)"
done
[ "$(id -u)" -eq 0 ] || skip "needs root (slurmd runs jobs as their user)"
[ -x "$KVX" ] || { echo "FAIL: no kvx binary at $KVX"; exit 1; }
KVX=$(readlink -f "$KVX")
export PATH="$PATH:/usr/sbin:/sbin"

T=$(mktemp -d /tmp/kvx-slurm-XXXXXX)
chmod 755 "$T"
pids=()
cleanup() {
  local rc=$?
  for f in "$T/slurmd.pid" "$T/slurmctld.pid" "$T/munge/munged.pid"; do
    [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
    echo "--- logs (failed, rc $rc) ---"
    tail -n 30 "$T"/log/*.log "$T"/out/logs/* 2>/dev/null || true
  fi
  [ "${KVX_KEEP:-0}" = 1 ] && echo "kept $T" || rm -rf "$T"
  exit $rc
}
trap cleanup EXIT

# --- munge: own key, socket, pid and log in $T ---
mkdir -p "$T/munge" "$T/log" "$T/state" "$T/spool"
chmod 700 "$T/munge"
dd if=/dev/urandom of="$T/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$T/munge/munge.key"
SOCK="$T/munge/munge.socket"
munged --force --key-file="$T/munge/munge.key" --socket="$SOCK" --pid-file="$T/munge/munged.pid" \
       --log-file="$T/log/munged.log" --seed-file="$T/munge/munged.seed" || skip "munged does not start here"
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done

# --- slurm.conf: this host as controller and only node, private ports ---
HOST=$(hostname -s)
CPUS=$(nproc)
PORT=$((20000 + ($$ % 20000)))
cat > "$T/slurm.conf" <<CONF
ClusterName=kvxtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
AuthInfo=socket=$SOCK
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=kvxtest Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
export SLURM_CONF="$T/slurm.conf"
slurmctld -D -i -f "$T/slurm.conf" >>"$T/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$T/slurm.conf" -N "$HOST" >>"$T/log/slurmd.out" 2>&1 &
pids+=($!)
state=""
for _ in $(seq 150); do
  state=$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)
  case "$state" in idle*|mix*|alloc*) break ;; esac
  sleep 0.2
done
case "$state" in idle*|mix*|alloc*) ;; *) echo "FAIL: the Slurm node did not come up (state '$state')"; exit 1 ;; esac
echo "slurm up: node $HOST, $CPUS CPUs, port $PORT"

# --- the sweep: 12 noop jobs, CPU workers ---
mkdir -p "$T/work"
cat > "$T/work/sweep.yaml" <<'YAML'
name: slurm-test
devices: cpu
workers: 1
protocols:
  - {name: noop, sleep_ms: [50, 100, 150, 200], value: [1, 2, 3]}
YAML
cd "$T/work"
"$KVX" slurm sweep.yaml --array "$N" --output "$T/out" --cpus-per-task 1 --time 00:10:00 --partition kvxtest
SCRIPT="$T/out/slurm-test.sbatch"
grep -q -- "--shard \"\$i/\$n\"" "$SCRIPT"
timeout 240 sbatch --wait "$SCRIPT"

# --- every job done exactly once ---
q() { "$KVX" status "$1" >/dev/null; }  # each shard is a readable kvx database
total=0
for i in $(seq 0 $((N - 1))); do
  db="$T/out/shard-$i.db"
  [ -f "$db" ] || { echo "FAIL: shard $i wrote no database"; exit 1; }
  q "$db"
  n=$(sqlite3 "$db" "SELECT COUNT(*) FROM results")
  d=$(sqlite3 "$db" "SELECT COUNT(*) FROM jobs WHERE status='done'")
  [ "$n" = "$d" ] || { echo "FAIL: shard $i: $n results for $d done jobs"; exit 1; }
  echo "shard $i: $n jobs done"
  total=$((total + n))
done
[ "$total" -eq 12 ] || { echo "FAIL: shards hold $total results, expected 12 (each job in exactly one shard)"; exit 1; }
"$KVX" merge "$T/out/merged.db" "$T"/out/shard-*.db
M="$T/out/merged.db"
[ "$(sqlite3 "$M" "SELECT COUNT(*) FROM results")" = 12 ] || { echo "FAIL: merged results != 12"; exit 1; }
[ "$(sqlite3 "$M" "SELECT COUNT(DISTINCT job_key) FROM results")" = 12 ] || { echo "FAIL: duplicate results"; exit 1; }
[ "$(sqlite3 "$M" "SELECT COUNT(*) FROM jobs WHERE status='done'")" = 12 ] || { echo "FAIL: not all done"; exit 1; }
# The merged database knows the whole sweep: nothing left to run.
"$KVX" run sweep.yaml --db "$M" --dry-run --format json > "$T/dry.json"
grep -q '"to_run": 0' "$T/dry.json" || { echo "FAIL: merged db still has jobs to run"; cat "$T/dry.json" | head -20; exit 1; }
# Merging again changes nothing.
before=$(sqlite3 "$M" "SELECT group_concat(job_key || metrics, ';') FROM (SELECT * FROM results ORDER BY id)")
"$KVX" merge "$M" "$T"/out/shard-*.db | tee "$T/merge2.txt"
grep -q "0 jobs added, 0 updated, 0 results added" "$T/merge2.txt" || { echo "FAIL: re-merge changed something"; exit 1; }
after=$(sqlite3 "$M" "SELECT group_concat(job_key || metrics, ';') FROM (SELECT * FROM results ORDER BY id)")
[ "$before" = "$after" ] || { echo "FAIL: re-merge changed rows"; exit 1; }
echo "PASS: $N array tasks, 12 jobs, each done exactly once; merge idempotent"
