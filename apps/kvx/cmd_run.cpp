// kvx run CONFIG: expand a sweep config, skip cached jobs, run the rest on worker processes.
#include <cstdio>
#include <cstdlib>

#include "apps/kvx/command.h"
#include "core/grid/sweep_config.h"
#include "core/runner/runner.h"

namespace {

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("run", "Run a sweep: expand CONFIG, skip cached jobs, run the rest (resumable)");
  auto opt = std::make_shared<kvx::runner::RunOptions>();
  cmd->add_option("config", opt->config, "sweep config (YAML)")->required();
  cmd->add_option("--db", opt->db, "results database (default: the config's db, else results/kvx.db)");
  cmd->add_option("--workers", opt->workers, "CPU worker processes (default: the config's workers)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--lease", opt->lease_seconds,
                  "seconds without heartbeat before a running job is reclaimed (default: config, 60; at least 1)")
      ->check(CLI::Range(kvx::grid::kMinLeaseSeconds, 1e9));
  cmd->add_option("--shard", opt->shard,
                  "i/N: run only shard i (0-based) of N, chosen by job key (Slurm arrays; merge with kvx merge)");
  cmd->add_flag("--dry-run", opt->dry_run, "print the expanded job table and counts; run and write nothing");
  cmd->add_flag("--retry-failed", opt->retry_failed, "run this sweep's failed jobs again");
  cmd->add_option("--format", opt->format, "text or json")->check(CLI::IsMember({"text", "json"}));
  cmd->callback([opt] {
    int rc = kvx::runner::run_sweep(*opt);
    if (rc != 0) {
      std::fflush(stdout);
      std::fflush(stderr);
      std::exit(rc);
    }
  });
}

KVX_COMMAND(20, setup);

}  // namespace
