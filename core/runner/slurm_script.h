// `kvx slurm CONFIG --array N`: an sbatch script for a Slurm job array whose task i runs
//   kvx run CONFIG --shard i/N --db OUTPUT/shard-i.db
// (each shard its own SQLite file on the node's view of OUTPUT: SQLite is never shared between
// hosts; a resubmitted or requeued task resumes its own shard), followed by
//   kvx merge OUTPUT/merged.db OUTPUT/shard-*.db
// once the array has finished. The config is validated and sharded before the script is
// written, so a bad config fails here, not on the cluster.
#pragma once
#include <string>
#include <vector>

namespace kvx::runner {

struct SlurmOptions {
  std::string config;
  int array = 1;              // number of array tasks (= shards)
  std::string partition;      // "" = cluster default
  int gpus_per_task = 0;      // 0 = no GPUs requested (CPU workers)
  std::string time;           // "" = partition default; e.g. 04:00:00
  int cpus_per_task = 0;      // 0 = cluster default
  std::string output = "results/slurm";  // shard databases, logs, the script
  std::string script;         // "" = OUTPUT/<sweep>.sbatch
  std::string job_name;       // "" = kvx-<sweep>
  std::string kvx_binary;     // "" = this binary (absolute)
  std::vector<std::string> extra;  // extra "#SBATCH" options, one per line (site options, tests)
};

struct SlurmScript {
  std::string path, text, sweep, merge_command;
  std::vector<size_t> jobs_per_shard;
};

// Builds the script text (no files written).
SlurmScript make_slurm_script(const SlurmOptions& opt);
// Builds and writes it (creates OUTPUT and OUTPUT/logs); returns what was written.
SlurmScript write_slurm_script(const SlurmOptions& opt);

}  // namespace kvx::runner
