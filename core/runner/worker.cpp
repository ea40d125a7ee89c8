#include "core/runner/worker.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <filesystem>
#include <mutex>
#include <thread>

#include "core/common/build_info.h"
#include "core/common/error.h"
#include "core/runner/environment.h"
#include "core/store/store.h"
#include "experiments/calibrate_aqua.h"
#include "experiments/model_cache.h"
#include "experiments/protocol.h"

namespace kvx::runner {
namespace {

volatile sig_atomic_t g_stop = 0;
volatile bool g_cancel = false;  // what the running protocol polls (ctx.cancel)

extern "C" void on_stop_signal(int) {
  g_stop = 1;
  g_cancel = true;
}

// Refreshes the job's heartbeat every few seconds on its own connection; when the job is no
// longer ours (reclaimed after a stall), cancels it.
class Heartbeat {
 public:
  Heartbeat(Store& store, std::string key, std::string worker, double interval_s)
      : store_(store), key_(std::move(key)), worker_(std::move(worker)), interval_(interval_s) {
    thread_ = std::thread([this] { loop(); });
  }
  ~Heartbeat() {
    {
      std::lock_guard<std::mutex> l(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  bool lost() const { return lost_; }

 private:
  void loop() {
    std::unique_lock<std::mutex> l(mu_);
    while (!done_) {
      cv_.wait_for(l, std::chrono::duration<double>(interval_));
      if (done_) break;
      try {
        if (!store_.heartbeat(key_, worker_)) {
          lost_ = true;
          g_cancel = true;
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "kvx worker: heartbeat failed: %s\n", e.what());
      }
    }
  }
  Store& store_;
  std::string key_, worker_;
  double interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::atomic<bool> lost_{false};
  std::thread thread_;
};

// Error text for the jobs table: first line only (c10 errors append a C++ backtrace).
std::string first_line(const std::string& s) {
  std::string out = s.substr(0, s.find('\n'));
  if (out.size() > 2000) out = out.substr(0, 2000) + "...";
  return out;
}

// Folders beside the database: calibration files, and what jobs share (JobContext::shared_dir).
std::string beside_db(const std::string& db, const char* name) {
  const auto parent = std::filesystem::path(db).parent_path();
  return ((parent.empty() ? std::filesystem::path(".") : parent) / name).string();
}
std::string calibration_dir(const std::string& db) { return beside_db(db, "calibration"); }

void check_finite(const nlohmann::json& m, const std::string& path) {
  if (m.is_number_float() && !std::isfinite(m.get<double>()))
    throw error("metric value is {}{}", std::isnan(m.get<double>()) ? "NaN" : "infinite",
                path.empty() ? "" : " ('" + path + "')");
  if (m.is_object())
    for (auto it = m.begin(); it != m.end(); ++it) check_finite(it.value(), path.empty() ? it.key() : path + "." + it.key());
  if (m.is_array())
    for (size_t i = 0; i < m.size(); ++i) check_finite(m[i], path + "[" + std::to_string(i) + "]");
}

}  // namespace

std::string worker_device_string(const WorkerOptions& opt) {
  if (opt.device != "cuda") return "cpu";
  const size_t n = static_cast<size_t>(std::count(opt.gpu_index.begin(), opt.gpu_index.end(), ',')) + 1;
  if (n == 1) return "cuda:0";
  std::map<std::string, std::string> limit;  // "0=123,1=456"
  std::string item;
  for (char c : opt.max_memory + ",") {
    if (c != ',') {
      item += c;
      continue;
    }
    auto eq = item.find('=');
    if (eq != std::string::npos) limit[item.substr(0, eq)] = item.substr(eq + 1);
    item.clear();
  }
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out += (i ? ",cuda:" : "cuda:") + std::to_string(i);
    auto it = limit.find(std::to_string(i));
    if (it != limit.end()) out += "@" + it->second;
  }
  return out;
}

int run_worker(const WorkerOptions& opt) {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  Store store(opt.db, Store::Access::ReadWrite);
  Store beat_store(opt.db, Store::Access::ReadWrite);
  const std::string me = worker_identity();
  const Environment env = current_environment(opt.device, opt.gpu_index);
  auto models = make_model_cache();
  std::string loaded_model;
  const double beat_every = std::max(0.2, std::min(5.0, opt.lease_seconds / 4));

  while (!g_stop) {
    auto job = store.claim(opt.sweep_id, me, loaded_model, opt.lease_seconds);
    if (!job) {
      // Nothing pending: others may still hold jobs that come back if their worker dies.
      auto c = store.counts(opt.sweep_id);
      if (c.running == 0 && c.pending == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    if (!job->model_path.empty() && job->model_path != loaded_model) {
      models->keep_only(job->model_path);
      loaded_model = job->model_path;
    }
    g_cancel = g_stop;
    JobContext ctx;
    ctx.models = models.get();
    ctx.device = worker_device_string(opt);
    ctx.cancel = &g_cancel;
    ctx.shared_dir = beside_db(opt.db, "shared");
    const double started = now_seconds();
    nlohmann::json metrics;
    std::string failure;
    bool lost = false;
    {
      Heartbeat hb(beat_store, job->key, me, beat_every);
      try {
        // `predictors: auto` calibrates on first use and caches the HDF5 next to the database,
        // keyed by model, corpus and quantizer settings; the job key keeps "auto".
        nlohmann::json job_spec = job->job;
        job_spec["method"] = prepare_aqua_method(job_spec.at("method"), job->model_path, calibration_dir(opt.db),
                                                 ctx.device, job_spec.at("protocol").value("dtype", "float32"));
        metrics = run_job(job_spec, ctx);
        if (!metrics.is_object()) throw error("protocol returned {} instead of a metrics object", metrics.type_name());
        check_finite(metrics, "");
      } catch (const std::exception& e) {
        failure = first_line(e.what());
        if (failure.empty()) failure = "unknown error";
      } catch (...) {
        failure = "unknown exception";
      }
      lost = hb.lost();
    }
    const double finished = now_seconds();
    if (lost) continue;  // someone else owns the job now; drop our outcome
    if (g_stop && !failure.empty()) {
      store.release(job->key, me);  // interrupted, not a failure of the job
      break;
    }
    if (failure.empty()) {
      store.complete(job->key, me, metrics, started, finished, env);
    } else {
      store.fail(job->key, me, failure);
    }
  }
  return g_stop ? 130 : 0;
}

}  // namespace kvx::runner
