#include "experiments/timed_policy.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <fmt/format.h>

namespace kvx {

void TimedPolicy::sync() const {
  if (device_.is_cpu()) return;
  c10::impl::getDeviceGuardImpl(device_.type())->getStream(device_).synchronize();
}

void TimedPolicy::reset(const ModelInfo& m, int64_t batch) {
  device_ = m.device;
  inner_.reset(m, batch);
}

void TimedPolicy::add_cache(const StepInfo& s, Clock::time_point t0) {
  sync();
  const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
  (s.n_new > 1 ? times_.prefill_cache_s : times_.decode_cache_s) += dt;
}

at::Tensor TimedPolicy::attend(int layer, const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new,
                               const StepInfo& s, const AttentionOptions& opt) {
  sync();
  const auto t0 = Clock::now();
  if (layer == 0) step_start_ = t0;
  at::Tensor out = inner_.attend(layer, q, k_new, v_new, s, opt);
  add_cache(s, t0);
  return out;
}

void TimedPolicy::append(int layer, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s) {
  sync();
  const auto t0 = Clock::now();
  if (layer == 0) step_start_ = t0;
  inner_.append(layer, k_new, v_new, s);
  add_cache(s, t0);
}

void TimedPolicy::end_step(const StepInfo& s) {
  sync();
  const auto t0 = Clock::now();
  inner_.end_step(s);
  add_cache(s, t0);
  const double layers = std::chrono::duration<double>(Clock::now() - step_start_).count();
  if (s.n_new > 1) {
    times_.prefill_layers_s += layers;
    ++times_.prefill_steps;
  } else {
    times_.decode_layers_s += layers;
    ++times_.decode_steps;
  }
}

void write_profile(nlohmann::json& m, const PolicyTimes& t, double prefill_s, double decode_s) {
  m["prof_prefill_s"] = prefill_s;
  m["prof_prefill_cache_s"] = t.prefill_cache_s;  // the policy's attend: storage (quantize, evict) and attention
  m["prof_prefill_layers_other_s"] = t.prefill_layers_s - t.prefill_cache_s;  // projections, norms, MLP
  m["prof_prefill_rest_s"] = prefill_s - t.prefill_layers_s;  // embedding, LM head, sampling
  m["prof_decode_s"] = decode_s;
  m["prof_decode_cache_s"] = t.decode_cache_s;
  m["prof_decode_layers_other_s"] = t.decode_layers_s - t.decode_cache_s;
  m["prof_decode_rest_s"] = decode_s - t.decode_layers_s;
  const double total = prefill_s + decode_s;
  m["prof_cache_fraction"] = total > 0 ? (t.prefill_cache_s + t.decode_cache_s) / total : 0.0;
}

std::string format_profile(const nlohmann::json& m) {
  auto get = [&](const std::string& k) { return m.value(k, 0.0); };
  auto row = [&](const char* phase, const std::string& p) {
    return fmt::format("  {:<8} {:>9.4f} s   cache+attention {:>9.4f} s   projections+MLP {:>9.4f} s   "
                       "rest {:>9.4f} s\n",
                       phase, get("prof_" + p + "s"), get("prof_" + p + "cache_s"), get("prof_" + p + "layers_other_s"),
                       get("prof_" + p + "rest_s"));
  };
  std::string out;
  if (m.contains("prof_prefill_s")) out += row("prefill", "prefill_");
  if (m.contains("prof_decode_s") && get("prof_decode_s") > 0) out += row("decode", "decode_");
  if (out.empty()) return out;
  return fmt::format("profile   cache+attention share {:.1f}%\n", 100 * get("prof_cache_fraction")) + out;
}

PolicyTimes& PolicyTimes::operator+=(const PolicyTimes& o) {
  prefill_cache_s += o.prefill_cache_s;
  decode_cache_s += o.decode_cache_s;
  prefill_layers_s += o.prefill_layers_s;
  decode_layers_s += o.decode_layers_s;
  prefill_steps += o.prefill_steps;
  decode_steps += o.decode_steps;
  return *this;
}

}  // namespace kvx
