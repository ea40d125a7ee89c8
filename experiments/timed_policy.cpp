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

AttnInputs TimedPolicy::update(int layer, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s) {
  sync();
  const auto t0 = Clock::now();
  if (layer == 0) step_start_ = t0;
  AttnInputs out = inner_.update(layer, k_new, v_new, s);
  add_cache(s, t0);
  return out;
}

void TimedPolicy::observe_attention(int layer, const at::Tensor& probs, const StepInfo& s) {
  sync();
  const auto t0 = Clock::now();
  inner_.observe_attention(layer, probs, s);
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
  if (decode_s < 0) {  // the caller timed prefill and decode together
    m["prof_total_s"] = prefill_s;
    m["prof_cache_s"] = t.prefill_cache_s + t.decode_cache_s;  // quantize / dequantize / evict
    m["prof_layers_other_s"] = t.prefill_layers_s + t.decode_layers_s - t.prefill_cache_s - t.decode_cache_s;
    m["prof_rest_s"] = prefill_s - t.prefill_layers_s - t.decode_layers_s;
  } else {
    m["prof_prefill_s"] = prefill_s;
    m["prof_prefill_cache_s"] = t.prefill_cache_s;  // quantize / dequantize / evict
    m["prof_prefill_layers_other_s"] = t.prefill_layers_s - t.prefill_cache_s;  // attention, projections, MLP
    m["prof_prefill_rest_s"] = prefill_s - t.prefill_layers_s;  // embedding, LM head, sampling
    m["prof_decode_s"] = decode_s;
    m["prof_decode_cache_s"] = t.decode_cache_s;
    m["prof_decode_layers_other_s"] = t.decode_layers_s - t.decode_cache_s;
    m["prof_decode_rest_s"] = decode_s - t.decode_layers_s;
  }
  const double total = prefill_s + std::max(decode_s, 0.0);
  m["prof_cache_fraction"] = total > 0 ? (t.prefill_cache_s + t.decode_cache_s) / total : 0.0;
}

std::string format_profile(const PolicyTimes& t, double prefill_s, double decode_s) {
  auto row = [](const char* phase, double total, double cache, double layers) {
    return fmt::format("{:<8} {:>9.4f} s  cache (quantize/dequantize) {:>9.4f} s  attention+MLP {:>9.4f} s  "
                       "rest {:>9.4f} s\n",
                       phase, total, cache, layers - cache, total - layers);
  };
  std::string out = "profile\n";
  if (decode_s < 0)
    return out + row("total", prefill_s, t.prefill_cache_s + t.decode_cache_s, t.prefill_layers_s + t.decode_layers_s);
  out += row("prefill", prefill_s, t.prefill_cache_s, t.prefill_layers_s);
  out += row("decode", decode_s, t.decode_cache_s, t.decode_layers_s);
  return out;
}

}  // namespace kvx
