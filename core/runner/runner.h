// `kvx run`: validate and expand a sweep config, insert its jobs into the store (keys already
// there are reused, finished ones are not recomputed), then run the rest on N worker
// processes (fork + exec of the kvx binary's hidden `worker` subcommand; with device cuda one
// per visible GPU, CUDA_VISIBLE_DEVICES pinned). The parent shows progress on stderr, gives a
// dead worker's job one failed attempt and starts a replacement, and on SIGINT/SIGTERM stops
// the workers, returns their jobs to pending and exits 130. Rerunning resumes.
#pragma once
#include <string>

namespace kvx::runner {

struct RunOptions {
  std::string config;
  std::string db;           // overrides the config's db ("" = config's, else results/kvx.db)
  int workers = 0;          // overrides the config's workers (0 = config's)
  double lease_seconds = 0; // overrides the config's lease (0 = config's)
  std::string shard;        // "i/N": run only the jobs whose key falls in shard i of N (Slurm arrays)
  bool dry_run = false;
  bool retry_failed = false;
  std::string format = "text";  // text | json
  std::string self_exe = "/proc/self/exe";  // binary providing the `worker` subcommand
};

// Returns the exit status: 0 all jobs done, 1 some jobs failed, 130 interrupted.
// Invalid configs and databases throw kvx::Error before anything is written.
int run_sweep(const RunOptions& opt);

}  // namespace kvx::runner
