#include "core/runner/runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "core/common/error.h"
#include "core/grid/identity.h"
#include "core/grid/sweep_config.h"
#include "core/runner/environment.h"
#include "core/runner/progress.h"
#include "core/runner/shard.h"
#include "core/store/store.h"

namespace fs = std::filesystem;

namespace kvx::runner {
namespace {

volatile sig_atomic_t g_signal = 0;
extern "C" void on_parent_signal(int sig) { g_signal = sig; }

std::string default_db() { return fs::absolute("results/kvx.db").lexically_normal().string(); }

// Where one worker runs: device cpu or cuda; gpu = its CUDA_VISIBLE_DEVICES ("" on CPU; "2,3"
// for a group, whose model is then split over the group's GPUs, max_memory limits per GPU).
struct Slot {
  std::string device = "cpu";
  std::string gpu;
  std::string max_memory;  // "0=BYTES,1=BYTES" ("" = even split)
};

struct Child {
  pid_t pid;
  Slot slot;
};

pid_t spawn_worker(const RunOptions& opt, const std::string& db, int64_t sweep_id, double lease, const Slot& slot) {
  const std::string& gpu = slot.gpu;
  std::vector<std::string> args = {"kvx",     "worker",      "--db",   db, "--sweep-id", std::to_string(sweep_id),
                                   "--device", slot.device,  "--lease", fmt::format("{}", lease)};
  if (!gpu.empty()) {
    args.push_back("--gpu");
    args.push_back(gpu);
  }
  if (!slot.max_memory.empty()) {
    args.push_back("--max-memory");
    args.push_back(slot.max_memory);
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) throw error("cannot start a worker process: fork failed");
  if (pid == 0) {
    // A worker must not outlive its runner (kill -9 of the runner alone).
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(130);
    if (!gpu.empty()) setenv("CUDA_VISIBLE_DEVICES", gpu.c_str(), 1);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(opt.self_exe.c_str(), argv.data());
    std::fprintf(stderr, "kvx: error: cannot execute %s for a worker\n", opt.self_exe.c_str());
    _exit(127);
  }
  return pid;
}

// One Slot per worker: `devices:` (auto / cpu / groups) or the older `device:` key.
std::vector<Slot> worker_slots(const grid::SweepConfig& cfg, int n_cpu_workers) {
  const std::string where = cfg.devices_where.empty() ? cfg.file : cfg.devices_where;
  std::vector<Slot> out;
  auto cpu = [&] {
    for (int i = 0; i < std::max(1, n_cpu_workers); ++i) out.push_back(Slot{});
    return out;
  };
  if (cfg.devices == "cpu" || (cfg.devices.empty() && cfg.device == "cpu")) return cpu();
  const std::vector<std::string> gpus = visible_gpus();
  if (cfg.devices == "auto" || cfg.devices.empty()) {
    if (gpus.empty()) {
      if (cfg.devices == "auto") {
        std::fprintf(stderr, "kvx: devices: auto: no GPU visible; running %d CPU worker%s\n", std::max(1, n_cpu_workers),
                     n_cpu_workers == 1 ? "" : "s");
        return cpu();
      }
      throw error("{}: device: cuda but no GPU is visible (CUDA_VISIBLE_DEVICES / nvidia-smi -L)", cfg.file);
    }
    for (const auto& g : gpus) out.push_back(Slot{"cuda", g, ""});
    return out;
  }
  // Groups: indices into the visible GPUs (under Slurm, CUDA_VISIBLE_DEVICES is the allocation).
  for (const auto& group : cfg.device_groups) {
    Slot s{"cuda", "", ""};
    for (size_t k = 0; k < group.size(); ++k) {
      if (group[k] >= static_cast<int>(gpus.size()))
        throw error("{}: devices: GPU {} is not visible (this host shows {} GPU{}: CUDA_VISIBLE_DEVICES / nvidia-smi -L)",
                    where, group[k], gpus.size(), gpus.size() == 1 ? "" : "s");
      s.gpu += (k ? "," : "") + gpus[static_cast<size_t>(group[k])];
    }
    if (group.size() > 1)
      for (const auto& [idx, bytes] : cfg.max_memory)
        if (idx < static_cast<int>(group.size())) s.max_memory += fmt::format("{}{}={}", s.max_memory.empty() ? "" : ",", idx, bytes);
    out.push_back(s);
  }
  return out;
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {}", WTERMSIG(status));
  return fmt::format("exited with status {}", WEXITSTATUS(status));
}

std::string host_prefix() {
  std::string id = worker_identity();
  return id.substr(0, id.rfind(':') + 1);
}

// Varying params as "k=v k=v" for the dry-run table.
std::vector<std::string> varying_params(const std::vector<JobSpec>& jobs) {
  std::map<std::string, std::set<std::string>> seen;
  for (const auto& j : jobs)
    for (auto it = j.params.begin(); it != j.params.end(); ++it) seen[it.key()].insert(it.value().dump());
  std::vector<std::string> out;
  for (const auto& [k, vals] : seen) {
    size_t present = 0;
    for (const auto& j : jobs) present += j.params.contains(k);
    if (vals.size() > 1 || present != jobs.size()) out.push_back(k);
  }
  return out;
}

int dry_run(const grid::SweepConfig& cfg, const std::string& db, const std::map<std::string, std::string>& status,
            const RunOptions& opt) {
  auto vary = varying_params(cfg.jobs);
  size_t done = 0, failed = 0;
  for (const auto& j : cfg.jobs) {
    const auto& s = status.at(j.key);
    done += s == "done";
    failed += s == "failed";
  }
  size_t to_run = cfg.jobs.size() - done - (opt.retry_failed ? 0 : failed);
  if (opt.format == "json") {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& j : cfg.jobs) {
      const auto& s = status.at(j.key);
      rows.push_back({{"key", j.key}, {"model", j.model}, {"dataset", j.dataset}, {"protocol", j.protocol},
                      {"method", j.method}, {"label", j.label}, {"params", j.params}, {"cached", s == "done"},
                      {"status", s.empty() ? "new" : s}});
    }
    nlohmann::json out = {{"sweep", cfg.name}, {"db", db},   {"total", cfg.jobs.size()}, {"done", done},
                          {"failed", failed},  {"to_run", to_run}, {"jobs", rows}};
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> table;
  table.push_back({"#", "model", "dataset", "protocol", "method", "label", "params", "cached"});
  int i = 0;
  for (const auto& j : cfg.jobs) {
    std::string params;
    for (const auto& k : vary)
      if (j.params.contains(k)) {
        const auto& v = j.params[k];
        params += (params.empty() ? "" : " ") + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
      }
    const auto& s = status.at(j.key);
    table.push_back({std::to_string(++i), j.model.empty() ? "-" : j.model, j.dataset.empty() ? "-" : j.dataset,
                     j.protocol, j.method, j.label, params.empty() ? "-" : params,
                     s == "done" ? "yes" : s == "failed" ? "failed" : "no"});
  }
  std::vector<size_t> w(table[0].size(), 0);
  for (const auto& r : table)
    for (size_t c = 0; c < r.size(); ++c) w[c] = std::max(w[c], r[c].size());
  for (const auto& r : table) {
    std::string line;
    for (size_t c = 0; c < r.size(); ++c)
      line += c + 1 == r.size() ? r[c] : fmt::format("{:<{}}  ", r[c], w[c]);
    std::printf("%s\n", line.c_str());
  }
  std::printf("\nsweep '%s': %zu jobs, %zu already done, %zu failed, %zu to run (db %s)\n", cfg.name.c_str(),
              cfg.jobs.size(), done, failed, to_run, db.c_str());
  return 0;
}

}  // namespace

int run_sweep(const RunOptions& opt) {
  // 1. Validate and expand: nothing is written until this has succeeded.
  std::unique_ptr<Store> lookup;
  // Determine the db path: --db, else config's db, else results/kvx.db (relative to cwd).
  auto cfg_db = grid::config_db_path(opt.config);
  std::string db = !opt.db.empty() ? fs::absolute(opt.db).lexically_normal().string() : !cfg_db.empty() ? cfg_db : default_db();
  if (fs::exists(db) && fs::file_size(db) > 0) lookup = std::make_unique<Store>(db, Store::Access::ReadOnly);
  grid::FileHasher hasher(lookup.get());
  grid::SweepConfig cfg = grid::load_sweep(opt.config, hasher);
  if (!opt.shard.empty()) {
    const Shard sh = parse_shard(opt.shard);
    const size_t all = cfg.jobs.size();
    cfg.jobs = jobs_in_shard(cfg.jobs, sh);
    std::fprintf(stderr, "kvx: shard %d/%d: %zu of %zu jobs\n", sh.index, sh.count, cfg.jobs.size(), all);
  }
  std::vector<std::string> keys;
  for (const auto& j : cfg.jobs) keys.push_back(j.key);
  std::map<std::string, std::string> status;
  if (lookup) status = lookup->statuses(keys);
  else
    for (const auto& k : keys) status[k] = "";
  if (opt.dry_run) return dry_run(cfg, db, status, opt);
  lookup.reset();

  const double lease = opt.lease_seconds > 0 ? opt.lease_seconds : cfg.lease_seconds;
  int n_workers = opt.workers > 0 ? opt.workers : cfg.workers;
  const std::vector<Slot> slots = worker_slots(cfg, n_workers);
  n_workers = static_cast<int>(slots.size());

  // 2. Record the sweep and its jobs.
  fs::create_directories(fs::path(db).parent_path());
  Store store(db, Store::Access::ReadWrite);
  const int64_t sweep_id = store.upsert_sweep(cfg.name, fs::absolute(cfg.file).string(), cfg.text, cfg.jobs,
                                              cfg.retries, opt.retry_failed);
  hasher.save_to(store);
  const SweepCounts before = store.counts(sweep_id);
  const int64_t cached = before.done;

  // 3. Workers.
  struct sigaction sa {};
  sa.sa_handler = on_parent_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  const auto t0 = std::chrono::steady_clock::now();
  std::map<pid_t, Child> children;
  // Jobs left running by a killed run are reclaimed by the workers' claims.
  int to_start = static_cast<int>(std::min<int64_t>(n_workers, before.pending + before.running));
  for (int i = 0; i < to_start; ++i) {
    const Slot& slot = slots[static_cast<size_t>(i)];
    pid_t pid = spawn_worker(opt, db, sweep_id, lease, slot);
    children[pid] = {pid, slot};
  }
  int respawns_left = 3 * std::max(1, n_workers) + static_cast<int>(cfg.retries) * n_workers;
  Progress progress(cfg.name, before.done + before.failed);
  bool stopping = false;
  auto stop_deadline = std::chrono::steady_clock::time_point::max();

  while (!children.empty()) {
    if (g_signal && !stopping) {
      stopping = true;
      std::fprintf(stderr, "\nkvx: stopping (signal %d): running jobs go back to pending\n", (int)g_signal);
      for (const auto& [p, c] : children) kill(p, SIGTERM);
      stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    }
    int status_code = 0;
    pid_t pid = waitpid(-1, &status_code, WNOHANG);
    if (pid > 0) {
      auto it = children.find(pid);
      if (it == children.end()) continue;
      Child c = it->second;
      children.erase(it);
      const std::string who = host_prefix() + std::to_string(pid);
      bool clean = WIFEXITED(status_code) && WEXITSTATUS(status_code) == 0;
      // A worker stopped by Ctrl-C / SIGTERM (exit 130) means the user stops the sweep.
      bool interrupted = (WIFEXITED(status_code) && WEXITSTATUS(status_code) == 130) ||
                         (WIFSIGNALED(status_code) && (WTERMSIG(status_code) == SIGINT || WTERMSIG(status_code) == SIGTERM));
      if (interrupted && !stopping) {
        stopping = true;
        if (!g_signal) g_signal = SIGINT;
        std::fprintf(stderr, "\nkvx: stopping (a worker was interrupted): running jobs go back to pending\n");
        for (const auto& [p, c2] : children) kill(p, SIGTERM);
        stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
      }
      if (stopping) {
        store.release_worker_jobs(who);
      } else if (!clean) {
        std::fprintf(stderr, "\nkvx: worker %d %s\n", pid, describe_exit(status_code).c_str());
        store.fail_worker_jobs(who, "worker process " + describe_exit(status_code) + " while running this job");
        auto cnt = store.counts(sweep_id);
        if (cnt.pending > 0 && respawns_left-- > 0) {
          pid_t np = spawn_worker(opt, db, sweep_id, lease, c.slot);
          children[np] = {np, c.slot};
        }
      }
      continue;
    }
    if (stopping && std::chrono::steady_clock::now() > stop_deadline) {
      for (const auto& [p, c] : children) kill(p, SIGKILL);
      stop_deadline = std::chrono::steady_clock::time_point::max();
    }
    progress.update(store.counts(sweep_id), false);
    std::this_thread::sleep_for(std::chrono::milliseconds(stopping ? 50 : 100));
  }
  const SweepCounts after = store.counts(sweep_id);
  progress.update(after, true);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t ran = after.done - before.done;

  auto failed_jobs = store.jobs(sweep_id, "failed");
  if (opt.format == "json") {
    nlohmann::json fj = nlohmann::json::array();
    for (const auto& j : failed_jobs)
      fj.push_back({{"key", j.key}, {"method", j.method}, {"label", j.label}, {"params", j.params},
                    {"attempts", j.attempts}, {"error", j.error}});
    nlohmann::json out = {{"sweep", cfg.name},         {"db", db},           {"total", after.total},
                          {"done", after.done},        {"failed", after.failed}, {"pending", after.pending},
                          {"running", after.running},  {"cached", cached},   {"ran", ran},
                          {"seconds", secs},           {"workers", n_workers}, {"interrupted", stopping},
                          {"failed_jobs", fj}};
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    std::printf("sweep '%s': %lld jobs: %lld done (%lld cached, %lld ran now), %lld failed, %lld pending\n",
                cfg.name.c_str(), (long long)after.total, (long long)after.done, (long long)cached, (long long)ran,
                (long long)after.failed, (long long)(after.pending + after.running));
    std::printf("%.1f s with %d worker%s%s; db %s\n", secs, n_workers, n_workers == 1 ? "" : "s",
                ran > 0 && secs > 0 ? fmt::format(" ({:.1f} jobs/min)", 60.0 * ran / secs).c_str() : "", db.c_str());
    for (size_t i = 0; i < failed_jobs.size() && i < 20; ++i)
      std::printf("failed: %s %s %s: %s\n", failed_jobs[i].method.c_str(), failed_jobs[i].label.c_str(),
                  failed_jobs[i].params.dump().c_str(), failed_jobs[i].error.c_str());
    if (failed_jobs.size() > 20) std::printf("... and %zu more failed jobs (kvx status)\n", failed_jobs.size() - 20);
  }
  std::fflush(stdout);
  if (stopping) return 130;
  return after.failed > 0 || after.pending + after.running > 0 ? 1 : 0;
}

}  // namespace kvx::runner
