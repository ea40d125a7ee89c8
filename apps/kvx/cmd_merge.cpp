// kvx merge OUT.db SHARD.db...: union kvx databases (Slurm shards) into OUT, idempotently.
#include <cstdio>
#include <cstdlib>

#include "apps/kvx/command.h"
#include "core/store/merge.h"

namespace {

struct MergeArgs {
  std::string out;
  std::vector<std::string> inputs;
};

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "merge", "Union shard databases into OUT (same job key = same row; conflicting results reported, not overwritten)");
  auto a = std::make_shared<MergeArgs>();
  cmd->add_option("out", a->out, "output database (created when missing)")->required();
  cmd->add_option("inputs", a->inputs, "input databases (e.g. results/slurm/shard-*.db)")->required();
  cmd->callback([a] {
    auto r = kvx::merge_databases(a->out, a->inputs);
    std::printf("merged %d database%s into %s: %lld jobs added, %lld updated, %lld results added, %lld unchanged, "
                "%zu conflict%s\n",
                r.inputs, r.inputs == 1 ? "" : "s", a->out.c_str(), (long long)r.jobs_added, (long long)r.jobs_updated,
                (long long)r.results_added, (long long)r.unchanged, r.conflicts.size(),
                r.conflicts.size() == 1 ? "" : "s");
    for (size_t i = 0; i < r.conflicts.size() && i < 20; ++i)
      std::printf("conflict: job %s: %s has %s, kept %s\n", r.conflicts[i].key.c_str(), r.conflicts[i].source.c_str(),
                  r.conflicts[i].other_metrics.c_str(), r.conflicts[i].kept_metrics.c_str());
    if (r.conflicts.size() > 20) std::printf("... and %zu more conflicts\n", r.conflicts.size() - 20);
    std::fflush(stdout);
    if (!r.conflicts.empty()) std::exit(1);
  });
}

KVX_COMMAND(26, setup);

}  // namespace
