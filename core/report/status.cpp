#include "core/report/status.h"

#include <fmt/format.h>

#include <cmath>

#include "core/common/error.h"
#include "core/store/store.h"

namespace kvx::report {

static std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  long t = std::lround(s);
  if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60);
  return fmt::format("{}:{:02}", t / 60, t % 60);
}

std::string sweep_status(const std::string& db, const std::optional<std::string>& sweep, const std::string& format) {
  Store store(db, Store::Access::ReadOnly);
  std::vector<SweepInfo> sweeps;
  if (sweep) {
    auto s = store.find_sweep(*sweep);
    if (!s) throw error("{}: no sweep named '{}'", db, *sweep);
    sweeps.push_back(*s);
  } else {
    sweeps = store.sweeps();
  }
  const double now = now_seconds();
  nlohmann::json js = nlohmann::json::array();
  std::string out;
  for (const auto& s : sweeps) {
    SweepCounts c = store.counts(s.id);
    double rate = store.throughput(s.id, now - 900);  // jobs/s over the last 15 min
    int64_t left = c.pending + c.running;
    double eta = rate > 0 ? static_cast<double>(left) / rate : -1;
    auto failed = store.jobs(s.id, "failed");
    if (format == "json") {
      nlohmann::json fj = nlohmann::json::array();
      for (const auto& j : failed)
        fj.push_back({{"key", j.key}, {"model", j.model}, {"dataset", j.dataset}, {"protocol", j.protocol},
                      {"method", j.method}, {"label", j.label}, {"params", j.params}, {"attempts", j.attempts},
                      {"error", j.error}});
      js.push_back({{"sweep", s.name}, {"config", s.config_path}, {"total", c.total}, {"done", c.done},
                    {"running", c.running}, {"failed", c.failed}, {"pending", c.pending},
                    {"jobs_per_min", rate * 60}, {"eta_seconds", left == 0 ? 0.0 : eta},
                    {"failed_jobs", fj}});
      continue;
    }
    out += fmt::format("sweep '{}' ({}): {} jobs: {} done, {} running, {} failed, {} pending", s.name, s.config_path,
                       c.total, c.done, c.running, c.failed, c.pending);
    if (left > 0)
      out += rate > 0 ? fmt::format("; {:.1f} jobs/min, ETA {}", rate * 60, duration(eta)) : "; ETA ? (no recent results)";
    out += "\n";
    for (const auto& j : failed)
      out += fmt::format("  failed {} {} {}{} (attempts {}): {}\n", j.method, j.label, j.protocol,
                         j.params.empty() ? "" : " " + j.params.dump(), j.attempts, j.error);
  }
  if (format == "json") return js.dump(2) + "\n";
  if (sweeps.empty()) out = "no sweeps in " + db + "\n";
  return out;
}

}  // namespace kvx::report
