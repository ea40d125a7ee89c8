// kvx worker: hidden; one worker process started by `kvx run` (not for direct use).
#include <cstdio>
#include <cstdlib>

#include "apps/kvx/command.h"
#include "core/grid/sweep_config.h"
#include "core/runner/worker.h"

namespace {

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("worker", "internal: a worker process of `kvx run`");
  cmd->group("");  // hidden from --help
  auto opt = std::make_shared<kvx::runner::WorkerOptions>();
  cmd->add_option("--db", opt->db)->required();
  cmd->add_option("--sweep-id", opt->sweep_id)->required();
  cmd->add_option("--device", opt->device)->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--lease", opt->lease_seconds)->check(CLI::Range(kvx::grid::kMinLeaseSeconds, 1e9));
  cmd->add_option("--gpu", opt->gpu_index);
  cmd->add_option("--max-memory", opt->max_memory);
  cmd->callback([opt] {
    int rc = kvx::runner::run_worker(*opt);
    std::fflush(stdout);
    std::fflush(stderr);
    std::exit(rc);
  });
}

KVX_COMMAND(99, setup);

}  // namespace
