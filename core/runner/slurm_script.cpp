#include "core/runner/slurm_script.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>

#include "core/common/error.h"
#include "core/grid/identity.h"
#include "core/grid/sweep_config.h"
#include "core/runner/shard.h"

namespace fs = std::filesystem;

namespace kvx::runner {
namespace {

// Single-quoted for bash.
std::string sh(const std::string& s) {
  std::string o = "'";
  for (char c : s) o += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return o + "'";
}

std::string self_exe() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("kvx") : p.string();
}

bool safe_token(const std::string& s) {
  for (char c : s)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == ':' || c == '.' || c == ',' ||
          c == '='))
      return false;
  return true;
}

}  // namespace

SlurmScript make_slurm_script(const SlurmOptions& opt) {
  if (opt.array < 1 || opt.array > 100000) throw error("--array must be in [1, 100000], got {}", opt.array);
  if (!opt.partition.empty() && !safe_token(opt.partition)) throw error("--partition '{}': not a partition name", opt.partition);
  if (!opt.time.empty() && !safe_token(opt.time)) throw error("--time '{}': expected e.g. 04:00:00 or 1-00:00:00", opt.time);
  grid::FileHasher hasher;
  const grid::SweepConfig cfg = grid::load_sweep(opt.config, hasher);  // validates everything
  SlurmScript out;
  out.sweep = cfg.name;
  out.jobs_per_shard.assign(static_cast<size_t>(opt.array), 0);
  for (const auto& j : cfg.jobs) out.jobs_per_shard[static_cast<size_t>(shard_of(j.key, opt.array))]++;

  const std::string cwd = fs::current_path().string();
  const std::string config = fs::absolute(opt.config).lexically_normal().string();
  const std::string dir = fs::absolute(opt.output).lexically_normal().string();
  const std::string bin = opt.kvx_binary.empty() ? self_exe() : fs::absolute(opt.kvx_binary).string();
  std::string name = opt.job_name.empty() ? "kvx-" + cfg.name : opt.job_name;
  for (auto& c : name)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) c = '_';
  out.path = opt.script.empty() ? dir + "/" + cfg.name + ".sbatch" : fs::absolute(opt.script).string();
  out.merge_command = fmt::format("{} merge {} {}/shard-*.db", sh(bin), sh(dir + "/merged.db"), sh(dir));

  std::string t = "#!/bin/bash\n";
  t += fmt::format("# Written by `kvx slurm` for sweep '{}' ({} jobs in {} shards: {}).\n", cfg.name, cfg.jobs.size(),
                   opt.array, [&] {
                     std::string s;
                     for (size_t i = 0; i < out.jobs_per_shard.size() && i < 16; ++i)
                       s += (i ? " " : "") + std::to_string(out.jobs_per_shard[i]);
                     return s + (out.jobs_per_shard.size() > 16 ? " ..." : "");
                   }());
  t += "# Submit: sbatch " + sh(out.path) + "\n";
  t += "# After all tasks: " + out.merge_command + "\n";
  t += "#SBATCH --job-name=" + name + "\n";
  t += fmt::format("#SBATCH --array=0-{}\n", opt.array - 1);
  t += "#SBATCH --ntasks=1\n";
  t += "#SBATCH --output=" + dir + "/logs/%A_%a.out\n";
  if (!opt.partition.empty()) t += "#SBATCH --partition=" + opt.partition + "\n";
  if (opt.gpus_per_task > 0) t += fmt::format("#SBATCH --gres=gpu:{}\n", opt.gpus_per_task);
  if (opt.cpus_per_task > 0) t += fmt::format("#SBATCH --cpus-per-task={}\n", opt.cpus_per_task);
  if (!opt.time.empty()) t += "#SBATCH --time=" + opt.time + "\n";
  for (const auto& e : opt.extra) {
    if (e.find('\n') != std::string::npos) throw error("--sbatch '{}': one option per line", e);
    t += "#SBATCH " + e + "\n";
  }
  t += "set -euo pipefail\n";
  t += "cd " + sh(cwd) + "\n";
  t += "i=\"${SLURM_ARRAY_TASK_ID:?run this script with sbatch (an array task)}\"\n";
  t += fmt::format("n={}\n", opt.array);
  t += "echo \"kvx shard $i/$n on $(hostname) (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-none})\"\n";
  t += "# Each task writes its own database: rerunning a task resumes its shard.\n";
  t += fmt::format("exec {} run {} --shard \"$i/$n\" --db {}\"/shard-$i.db\"\n", sh(bin), sh(config), sh(dir));
  out.text = std::move(t);
  return out;
}

SlurmScript write_slurm_script(const SlurmOptions& opt) {
  SlurmScript s = make_slurm_script(opt);
  const std::string dir = fs::absolute(opt.output).lexically_normal().string();
  fs::create_directories(dir + "/logs");
  if (fs::path(s.path).has_parent_path()) fs::create_directories(fs::path(s.path).parent_path());
  {
    std::ofstream f(s.path, std::ios::binary | std::ios::trunc);
    if (!f) throw error("{}: cannot write the sbatch script", s.path);
    f << s.text;
  }
  chmod(s.path.c_str(), 0755);
  return s;
}

}  // namespace kvx::runner
