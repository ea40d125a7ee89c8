// Deterministic sharding of a sweep's jobs for Slurm arrays: `kvx run --shard i/N` keeps the jobs
// whose key falls in shard i. A key's shard depends on the key alone (FNV-1a 64 of the key text,
// mod N), so every job lands in exactly one shard, the same one on every host and every rerun,
// whatever order the grid expands in. Shards are numbered 0..N-1 like SLURM_ARRAY_TASK_ID.
#pragma once
#include <string>
#include <vector>

#include "core/store/store.h"

namespace kvx::runner {

struct Shard {
  int index = 0;
  int count = 1;  // 1 = no sharding
};

// "i/N" with 0 <= i < N <= 100000; kvx::Error otherwise.
Shard parse_shard(const std::string& text);
// Shard (0..count-1) of a job key.
int shard_of(const std::string& job_key, int count);
// The jobs of `all` in shard s, in their original order.
std::vector<JobSpec> jobs_in_shard(const std::vector<JobSpec>& all, const Shard& s);

}  // namespace kvx::runner
