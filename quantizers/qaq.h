// QAQ — quality-adaptive quantization (docs/methods/qaq.md).
//
// Registry rows:
//   `qaq`        codec row with the per-role parameters ("Parameters"); used in the key and/or
//                value slot (the slot implies key_or_value_cache). The other slot may be `none`
//                (that role stays full precision) or `qaq`.
//   `qaq_cache`  the policy row filled in automatically when a slot uses qaq; it holds the
//                whole-cache schedule ("Schedule") and builds one QaqPolicy for both roles:
//                  schedule: streaming (default; kvx resolution) — every end_step recomputes every
//                            token's width with the current T and re-quantizes, from the fp16 host
//                            copy, each group whose width changed;
//                            one_shot (upstream evaluation) — the first forward call (the question
//                            prefill) is quantized once with its own attention; later tokens stay
//                            full precision.
//
// Storage per group (head: one token's D values of one layer and KV head; layer: Hkv·D values of
// one layer; token: L·Hkv·D values): packed b-bit codes of the inliers (ceil(n·b/8) bytes), fp16
// centre (omitted when symmetric) and fp16 scale, an 8-bit width field, and per outlier an fp16
// value + a ceil(log2 M)-bit index. The fp16 host copy of every token (needed to re-quantize to a
// wider width) is reported as offload bits, outside bpv. paper_bpv ("Memory") is reported by
// qaq_paper_bpv(). A dequantized working view is kept for attention and is not counted (like the
// decoded block cache of docs/methods/aqua_kv.md).
//
// Attention (value rule): observe_attention keeps the last W = last_n_attentions query rows of
// every layer; a_t = max over those rows and over the query heads (and layers) the group covers.
// Keys use only T and q_norm. The newest W−1 tokens get n_bits_max; T ≤ 1 keeps full precision.
// q_norm: auto (stored as 0) is the 90th percentile of ‖q/√D‖² over the calibration queries:
// every query the model hands over (observe_queries: all layers and query heads) in a sequence
// until its first key quantization, i.e. the prompt (the first chunk with more than one token).
// The value is fixed from then on and recomputed for each sequence (reset), so a window's result
// does not depend on which windows ran before it.
#pragma once
#include <nlohmann/json.hpp>

#include <memory>
#include <vector>

#include "core/cache/kv_cache_policy.h"
#include "quantizers/qaq_math.h"
#include "quantizers/registry.h"

namespace kvx {

enum class QaqLevel { Head, Layer, Token };
enum class QaqSchedule { Streaming, OneShot };

// One role's resolved parameters (docs/methods/qaq.md, "Parameters").
struct QaqRoleConfig {
  bool enabled = true;  // false: the slot is `none`, this role stays full precision
  bool is_key = true;
  QaqLevel level = QaqLevel::Head;
  qaq::GroupOptions group;  // outliers_ratio, symmetric, center, method
  bool use_attentions = true;
  int n_bits_uniform = 2;
  int last_n_attentions = 5;
  double target_quantization_error = 3.0;
  int n_bits_min = 1, n_bits_max = 4;
  double q_norm = 300;  // 0 = auto
  qaq::BitsFormula bits_formula = qaq::BitsFormula::Code;
};

MethodTraits qaq_traits();        // codec row `qaq`
MethodTraits qaq_cache_traits();  // policy row `qaq_cache`

// From a resolved component ({"type": "qaq", ...} or {"type": "none"}).
QaqRoleConfig qaq_role_config(const nlohmann::json& component, bool is_key);

class QaqPolicy final : public KVCachePolicy {
 public:
  QaqPolicy(QaqRoleConfig key, QaqRoleConfig value, QaqSchedule schedule);
  ~QaqPolicy() override;

  void reset(const ModelInfo& m, int64_t batch) override;
  AttnInputs update(int layer, const at::Tensor& k_new, const at::Tensor& v_new,
                    const StepInfo& s) override;
  bool wants_queries() const override;
  void observe_queries(int layer, const at::Tensor& q, const StepInfo& s) override;
  bool wants_attention() const override;
  void observe_attention(int layer, const at::Tensor& probs, const StepInfo& s) override;
  void end_step(const StepInfo& s) override;
  MemoryReport memory() const override;
  std::string name() const override { return "qaq"; }

  // The q_norm the key rule uses: the configured number, or with `auto` the calibrated one
  // (NaN before calibration, or when keys do not use the rule).
  double key_q_norm() const;
  // docs/methods/qaq.md, "Memory": bits per value by the upstream formula (keys and values averaged).
  double paper_bpv() const;
  // Width of one group (-1 = kept full precision). Index: head level (layer, b, h, t);
  // layer level (layer, b, 0, t); token level (0, b, 0, t).
  int group_bits(bool key, int layer, int64_t b, int64_t h, int64_t t) const;
  // Mean width over quantized groups of one role (NaN when none).
  double mean_bits(bool key) const;
  int64_t requantized_groups() const;  // groups (re)quantized since reset (work done)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::unique_ptr<KVCachePolicy> make_qaq_policy(const nlohmann::json& resolved);
// paper_bpv / key_q_norm of a QaqPolicy; NaN for other policies.
double qaq_paper_bpv(const KVCachePolicy& p);
double qaq_key_q_norm(const KVCachePolicy& p);

}  // namespace kvx
