// A KVCachePolicy decorator that profiles a forward pass from the cache's side, with no model
// changes: time inside the wrapped policy's attend() / end_step() (where compression methods
// store, quantize, evict and attend) and the wall time of the transformer layers (from layer 0's
// attend() to end_step()), split into prefill (chunks of more than one token) and decode
// (one-token steps). The caller times whole forward calls; what the layers do not cover
// (embedding, LM head, sampling) is the difference.
// On CUDA every measured call synchronizes the device first and last, so times are the work's
// own (profiling only: it serializes the stream).
#pragma once
#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <string>

#include "core/cache/kv_cache_policy.h"

namespace kvx {

struct PolicyTimes {
  double prefill_cache_s = 0, decode_cache_s = 0;    // inside the policy (storage and attention)
  double prefill_layers_s = 0, decode_layers_s = 0;  // layer 0 attend() .. end_step()
  int64_t prefill_steps = 0, decode_steps = 0;
  PolicyTimes& operator+=(const PolicyTimes& o);
};

class TimedPolicy final : public KVCachePolicy {
 public:
  explicit TimedPolicy(KVCachePolicy& inner) : inner_(inner) {}
  explicit TimedPolicy(std::unique_ptr<KVCachePolicy> owned) : owned_(std::move(owned)), inner_(*owned_) {}
  void reset(const ModelInfo& m, int64_t batch) override;
  at::Tensor attend(int layer, const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s,
                    const AttentionOptions& opt) override;
  void append(int layer, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s) override;
  void end_step(const StepInfo& s) override;
  MemoryReport memory() const override { return inner_.memory(); }
  std::string name() const override { return inner_.name(); }
  const AttentionPaths& paths() const override { return inner_.paths(); }

  const PolicyTimes& times() const { return times_; }
  void clear() { times_ = PolicyTimes{}; }

 private:
  using Clock = std::chrono::steady_clock;
  void sync() const;
  void add_cache(const StepInfo& s, Clock::time_point t0);
  std::unique_ptr<KVCachePolicy> owned_;
  KVCachePolicy& inner_;
  at::Device device_ = at::kCPU;
  Clock::time_point step_start_;
  PolicyTimes times_;
};

// prof_* metrics. prefill_s / decode_s: the caller's wall times of its prefill (chunks of more
// than one token) and decode (one-token) forward calls.
void write_profile(nlohmann::json& metrics, const PolicyTimes& t, double prefill_s, double decode_s);
// The prof_* metrics of write_profile as a short human-readable table (`--profile` on the
// command line); "" when the metrics hold none.
std::string format_profile(const nlohmann::json& metrics);

}  // namespace kvx
