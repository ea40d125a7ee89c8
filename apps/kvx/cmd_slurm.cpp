// kvx slurm CONFIG --array N: write an sbatch script for a Slurm job array (one shard per task).
#include <cstdio>

#include "apps/kvx/command.h"
#include "core/runner/slurm_script.h"

namespace {

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "slurm", "Write an sbatch array script: task i runs `kvx run CONFIG --shard i/N --db OUTPUT/shard-i.db`");
  auto opt = std::make_shared<kvx::runner::SlurmOptions>();
  cmd->add_option("config", opt->config, "sweep config (YAML)")->required();
  cmd->add_option("--array", opt->array, "number of array tasks (shards)")->required()->check(CLI::Range(1, 100000));
  cmd->add_option("--partition", opt->partition, "Slurm partition (default: the cluster's)");
  cmd->add_option("--gpus-per-task", opt->gpus_per_task, "GPUs per task (--gres=gpu:G; 0 = CPU workers)")
      ->check(CLI::Range(0, 64));
  cmd->add_option("--time", opt->time, "time limit per task, e.g. 04:00:00");
  cmd->add_option("--cpus-per-task", opt->cpus_per_task, "CPUs per task")->check(CLI::Range(0, 4096));
  cmd->add_option("--output", opt->output, "folder for shard databases, logs and the script (default results/slurm)");
  cmd->add_option("--script", opt->script, "script path (default OUTPUT/<sweep>.sbatch)");
  cmd->add_option("--job-name", opt->job_name, "Slurm job name (default kvx-<sweep>)");
  cmd->add_option("--kvx", opt->kvx_binary, "kvx binary the tasks run (default: this one)");
  cmd->add_option("--sbatch", opt->extra, "an extra '#SBATCH' option (repeatable; e.g. --sbatch=--account=abc)");
  cmd->callback([opt] {
    auto s = kvx::runner::write_slurm_script(*opt);
    std::printf("wrote %s (sweep '%s', %d array tasks)\n", s.path.c_str(), s.sweep.c_str(), opt->array);
    std::printf("submit:   sbatch %s\n", s.path.c_str());
    std::printf("then:     %s\n", s.merge_command.c_str());
  });
}

KVX_COMMAND(25, setup);

}  // namespace
