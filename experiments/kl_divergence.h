// kl_divergence protocol: how far a compressed cache moves the model's next-token
// distributions from the full-precision cache's, on the same text, same windows and same chunked
// feeding (docs/methods/protocols.md, "kl_divergence"). Per scored position t:
//   KL_t = sum_v p_t(v) (log p_t(v) - log q_t(v)),  p = softmax(fp16 logits), q = softmax(method)
// computed in float64 from the fp32 logits. Metrics (llama.cpp's scoreboard): kl_mean,
// kl_median, kl_p99, kl_max, top1_agreement (argmax p == argmax q), rms_dp (RMS of
// q(next) - p(next) for the actual next token), ppl, ppl_ref, ppl_ratio, plus KV memory.
// The reference log-probabilities are computed with make_full_precision_policy() on the same
// model object in the same job and kept per window in memory and on disk (float32 files in the
// sweep's shared folder beside the database, or $KVX_REFERENCE_CACHE), keyed by everything they
// depend on (model, dtype, device, dataset, the protocol's parameters but `batch`, the window), so
// that a sweep computes them once whatever the number of workers; rows count the windows computed
// and reused (reference_windows_computed, reference_windows_reused).
#pragma once
#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <vector>

#include "experiments/protocol.h"

namespace kvx {

// ref_logits, logits: [N, V] (any float dtype). Returns [N] float64 KL(softmax(ref) || softmax(x)).
at::Tensor kl_per_token(const at::Tensor& ref_logits, const at::Tensor& logits);
// [N] bool: argmax agrees (ties -> lowest index, as torch.argmax).
at::Tensor top1_agree(const at::Tensor& ref_logits, const at::Tensor& logits);

// Running sums over windows; finish() writes the metrics and throws kvx::Error on NaN/Inf.
class KlAccumulator {
 public:
  // ref_logp, logp: [N, V] log-probabilities (or logits); targets [N] int64 next tokens.
  void add(const at::Tensor& ref_logits, const at::Tensor& logits, const at::Tensor& targets);
  int64_t count() const { return int64_t(kl_.size()); }
  void write(nlohmann::json& metrics) const;

 private:
  std::vector<double> kl_;
  double agree_ = 0, nll_ = 0, nll_ref_ = 0, dp2_ = 0;
};

ProtocolTraits kl_divergence_protocol();
nlohmann::json run_kl_divergence(const nlohmann::json& job, JobContext& ctx);

}  // namespace kvx
