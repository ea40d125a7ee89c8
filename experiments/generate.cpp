#include "experiments/generate.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "core/common/error.h"
#include "core/model/decode_steps.h"
#include "core/model/model.h"

namespace kvx {
namespace {

at::Tensor as_ids(const int32_t* ids, int64_t n, at::Device dev) {
  at::Tensor t = at::empty({1, n}, at::kLong);
  std::copy(ids, ids + n, t.data_ptr<int64_t>());
  return t.to(dev);
}

int32_t pick(const at::Tensor& logits_in, const GenerateOptions& opt, std::mt19937_64& rng) {
  at::Tensor logits = logits_in.to(at::kCPU, at::kFloat).contiguous();
  const float* l = logits.data_ptr<float>();
  const int64_t V = logits.numel();
  for (int64_t i = 0; i < V; ++i)
    if (!std::isfinite(l[i])) throw error("generate: logits became NaN/Inf (token {})", i);
  if (opt.temperature <= 0) return static_cast<int32_t>(std::max_element(l, l + V) - l);  // first max
  std::vector<int64_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  int64_t k = opt.top_k > 0 ? std::min(opt.top_k, V) : V;
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
    return l[a] > l[b] || (l[a] == l[b] && a < b);
  });
  std::vector<double> p(k);
  const double top = l[order[0]];
  for (int64_t i = 0; i < k; ++i) p[i] = std::exp((l[order[i]] - top) / opt.temperature);
  std::discrete_distribution<int64_t> dist(p.begin(), p.end());
  return static_cast<int32_t>(order[dist(rng)]);
}

}  // namespace

std::vector<int32_t> generate_continuation(CausalLM& model, KVCachePolicy& policy, const std::vector<int32_t>& prompt,
                                           const GenerateOptions& opt, GenerateTimes* times) {
  c10::InferenceMode guard;
  if (prompt.empty()) throw error("generate: the prompt has no tokens");
  using Clock = std::chrono::steady_clock;
  std::mt19937_64 rng(opt.seed);
  policy.reset(model.info(), 1);
  const int64_t n = int64_t(prompt.size());
  auto t0 = Clock::now();
  at::Tensor logits = model.forward(as_ids(prompt.data(), n, model.device()), 0, policy);
  std::vector<int32_t> out;
  DecodeSteps steps(model, policy, default_step_mode(model));
  for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
    const int32_t next = pick(logits[0][logits.size(1) - 1], opt, rng);  // copies to the host: synchronizes
    if (times) (i == 0 ? times->prefill_s : times->decode_s) += std::chrono::duration<double>(Clock::now() - t0).count();
    out.push_back(next);
    if (next == opt.stop_id || i + 1 == opt.max_new_tokens) break;
    t0 = Clock::now();
    logits = steps.forward(as_ids(&next, 1, model.device()), n + i);
    if (times) ++times->decode_steps;
  }
  return out;
}

}  // namespace kvx
