// noop protocol: no model, no dataset; sleeps, then returns {"value": value}. It exists for the
// engine's tests and the scheduler benchmark (claim/run/record overhead without model work).
//   sleep_ms  time spent "working" (checks ctx.cancel every 10 ms)
//   fail      throw kvx::Error("noop: asked to fail")
//   value     the metric returned
//   nan       return NaN as the metric (the worker must record this as a failure)
#include <chrono>
#include <cmath>
#include <limits>
#include <thread>

#include "core/common/error.h"
#include "experiments/protocol.h"

namespace kvx {

ProtocolTraits noop_protocol() {
  ProtocolTraits t;
  t.name = "noop";
  t.summary = "does nothing (engine tests, scheduler benchmark); no model, no dataset";
  t.params = {
      {"sleep_ms", ParamType::Int, 0, 0, 3600000, {}, "milliseconds to sleep"},
      {"fail", ParamType::Bool, false, -1e300, 1e300, {}, "throw an error instead of returning"},
      {"value", ParamType::Float, 0.0, -1e300, 1e300, {}, "metric value returned"},
      {"nan", ParamType::Bool, false, -1e300, 1e300, {}, "return NaN as the metric"},
  };
  t.needs_model = false;
  t.needs_dataset = false;
  t.run = [](const nlohmann::json& job, JobContext& ctx) -> nlohmann::json {
    const auto& p = job.at("protocol");
    const int64_t sleep_ms = p.value("sleep_ms", int64_t{0});
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(sleep_ms);
    while (std::chrono::steady_clock::now() < until) {
      if (ctx.cancel && *ctx.cancel) throw error("noop: cancelled");
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
          std::chrono::milliseconds(10), until - std::chrono::steady_clock::now()));
    }
    if (ctx.progress) ctx.progress(1.0);
    if (p.value("fail", false)) throw error("noop: asked to fail");
    double v = p.value("nan", false) ? std::numeric_limits<double>::quiet_NaN() : p.value("value", 0.0);
    return {{"value", v}};
  };
  return t;
}

}  // namespace kvx
