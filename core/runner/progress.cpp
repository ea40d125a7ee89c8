#include "core/runner/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

#include <fmt/format.h>

namespace kvx::runner {

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  long t = std::lround(s);
  if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60);
  return fmt::format("{}:{:02}", t / 60, t % 60);
}

Progress::Progress(std::string sweep, int64_t finished_at_start)
    : sweep_(std::move(sweep)), base_(finished_at_start), tty_(isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()), last_(start_) {}

void Progress::update(const SweepCounts& c, bool final_line) {
  auto now = std::chrono::steady_clock::now();
  double since_last = std::chrono::duration<double>(now - last_).count();
  if (!final_line && since_last < (tty_ ? 0.25 : 5.0)) return;
  if (final_line && !tty_ && !printed_) return;  // short runs: the summary says it all
  last_ = now;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  int64_t finished = c.done + c.failed - base_;
  double per_min = elapsed > 0 ? 60.0 * static_cast<double>(finished) / elapsed : 0;
  int64_t left = c.pending + c.running;
  std::string eta = per_min > 0 ? format_duration(60.0 * static_cast<double>(left) / per_min) : "?";
  std::string line = fmt::format("[{}] {}/{} done, {} failed, {} running, {} pending | {:.1f} jobs/min | ETA {}",
                                 sweep_, c.done, c.total, c.failed, c.running, c.pending, per_min,
                                 left == 0 ? "0:00" : eta);
  if (tty_) {
    std::fprintf(stderr, "\r%s\033[K%s", line.c_str(), final_line ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
  printed_ = true;
}

}  // namespace kvx::runner
