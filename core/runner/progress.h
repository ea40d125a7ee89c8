// The runner's live progress line on stderr: done/failed/running/total, jobs/min since start
// and ETA. On a terminal it is rewritten in place (\r); otherwise a line every 5 seconds.
#pragma once
#include <chrono>
#include <string>

#include "core/store/store.h"

namespace kvx::runner {

class Progress {
 public:
  // finished_at_start: done + failed before this run (not counted in the rate).
  Progress(std::string sweep, int64_t finished_at_start);
  void update(const SweepCounts& c, bool final_line);

 private:
  std::string sweep_;
  int64_t base_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_;
  bool printed_ = false;
};

std::string format_duration(double seconds);  // "1:05:03", "4:07", "0:09"

}  // namespace kvx::runner
