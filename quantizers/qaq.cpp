// Registry rows and parameter handling for QAQ (policy itself: qaq_policy.cpp).
#include "quantizers/qaq.h"

#include <fmt/format.h>

#include <cmath>

#include "core/common/error.h"

namespace kvx {
namespace {

// The slot implies the role; `q_norm: auto` is stored as 0 (the schema has no union type).
void prepare(nlohmann::json& given, const std::string& slot) {
  if (slot != "key" && slot != "value") return;
  if (!given.contains("key_or_value_cache")) {
    given["key_or_value_cache"] = slot;
  } else if (given["key_or_value_cache"] != slot) {
    throw ParamError({slot, "key_or_value_cache"},
                     fmt::format("'key_or_value_cache' is {} but the quantizer sits in the '{}' slot",
                                 given["key_or_value_cache"].dump(), slot));
  }
  if (given.contains("q_norm") && given["q_norm"] == "auto") given["q_norm"] = 0.0;
}

void check(const nlohmann::json& m) {
  bool any = false;
  for (const char* slot : {"key", "value"}) {
    const auto& c = m[slot];
    const std::string type = c["type"].get<std::string>();
    if (type == "none") continue;
    if (type != "qaq")
      throw ParamError({slot, "type"}, fmt::format("the qaq_cache policy pairs qaq with qaq or none, got '{}'", type));
    any = true;
    if (c["n_bits_min"].get<int>() > c["n_bits_max"].get<int>())
      throw ParamError({slot, "n_bits_min"}, fmt::format("'n_bits_min' ({}) must not exceed 'n_bits_max' ({})",
                                                         c["n_bits_min"].get<int>(), c["n_bits_max"].get<int>()));
    if (c["method"] == "normal" && c["use_attentions"].get<bool>())
      throw ParamError({slot, "method"}, "'method: normal' has fixed bits only: set use_attentions: false");
    if (c["method"] == "normal" && c["center"] != "mean")
      throw ParamError({slot, "center"}, "'center' applies to the uniform method only");
  }
  if (!any) throw ParamError({"policy", "type"}, "the qaq_cache policy needs qaq in the key or value slot");
}

std::string label(const nlohmann::json& m) {
  auto side = [](const nlohmann::json& c, char s) -> std::string {
    if (c["type"] == "none") return fmt::format("{}fp", s);
    if (!c["use_attentions"].get<bool>()) return fmt::format("{}{}", s, c["n_bits_uniform"].get<int>());
    const double qn = c["q_norm"].get<double>();
    std::string out = fmt::format("{}[{} r{} w{} t{} b{}-{}", s, c["level"].get<std::string>(),
                                  c["outliers_ratio"].get<double>(), c["last_n_attentions"].get<int>(),
                                  c["target_quantization_error"].get<double>(), c["n_bits_min"].get<int>(),
                                  c["n_bits_max"].get<int>());
    if (s == 'k' && qn != 300) out += qn == 0 ? " qauto" : fmt::format(" q{}", qn);
    if (c["bits_formula"] != "code") out += " paperbits";
    if (c["center"] != "mean") out += " midrange";
    if (c["zero_bits"] != "reference") out += " z0mean";
    if (c["symmetric"].get<bool>()) out += " sym";
    return out + "]";
  };
  std::string out = fmt::format("qaq {} {}", side(m["key"], 'k'), side(m["value"], 'v'));
  if (m["policy"]["schedule"] != "streaming") out += " " + m["policy"]["schedule"].get<std::string>();
  return out;
}

}  // namespace

MethodTraits qaq_traits() {
  MethodTraits t;
  t.name = "qaq";
  t.kind = ComponentKind::Codec;
  t.summary = "QAQ: per-token widths from an error budget (keys: query-norm bound; values: max attention "
              "over the last W queries), exact outliers, newest W-1 tokens at n_bits_max";
  t.params = {
      {"key_or_value_cache", ParamType::Enum, nullptr, -1e300, 1e300, {"key", "value"},
       "selects the bit rule; implied by the slot"},
      {"level", ParamType::Enum, "head", -1e300, 1e300, {"head", "layer", "token"},
       "group: one token's values of one head / one layer / all layers"},
      {"symmetric", ParamType::Bool, false, -1e300, 1e300, {}, "centre 0 (true) or the inlier mean"},
      {"method", ParamType::Enum, "uniform", -1e300, 1e300, {"uniform", "normal"},
       "value grid (normal: fixed bits only)"},
      {"outliers_ratio", ParamType::Float, 0.01, 0, 0.999, {}, "fraction kept exact, half per tail"},
      {"use_attentions", ParamType::Bool, true, -1e300, 1e300, {}, "adaptive widths (false: n_bits_uniform)"},
      {"n_bits_uniform", ParamType::Int, 2, 0, 8, {}, "width when use_attentions is false"},
      {"last_n_attentions", ParamType::Int, 5, 1, 1 << 20, {}, "window W of recent query rows"},
      {"target_quantization_error", ParamType::Float, 3.0, 1e-12, 1e12, {}, "tau"},
      {"n_bits_min", ParamType::Int, 1, 0, 8, {}, "lower clamp of the width"},
      {"n_bits_max", ParamType::Int, 4, 0, 8, {}, "upper clamp; also the width of the newest W-1 tokens"},
      {"q_norm", ParamType::Float, 300.0, 0, 1e12, {},
       "key rule's squared query norm; auto (stored as 0) = calibrated 90th percentile of |q/sqrt(D)|^2"},
      {"bits_formula", ParamType::Enum, "code", -1e300, 1e300, {"code", "paper"},
       "code: ceil(log2(R/(2e)+1)); paper: ceil(log2(R/e))"},
      {"center", ParamType::Enum, "mean", -1e300, 1e300, {"mean", "midrange"},
       "mean (code) or mid-range bins (paper)"},
      {"zero_bits", ParamType::Enum, "reference", -1e300, 1e300, {"reference", "mean"},
       "mean centre, 0-bit inliers: the reference code's mean - R/2, or the group mean"},
  };
  t.bits = "0-8 adaptive";
  t.needs_attention = true;
  t.prepare = prepare;
  t.default_policy = "qaq_cache";
  return t;
}

MethodTraits qaq_cache_traits() {
  MethodTraits t;
  t.name = "qaq_cache";
  t.kind = ComponentKind::Policy;
  t.summary = "QAQ schedule: streaming re-quantization from an fp16 host copy, or one-shot after prefill";
  t.params = {
      {"schedule", ParamType::Enum, "streaming", -1e300, 1e300, {"streaming", "one_shot"},
       "streaming: widths recomputed every step; one_shot: quantize the first forward call once"},
  };
  t.bits = "-";
  t.needs_attention = true;
  t.check = check;
  t.make_policy = make_qaq_policy;
  t.label = label;
  return t;
}

QaqRoleConfig qaq_role_config(const nlohmann::json& c, bool is_key) {
  QaqRoleConfig r;
  r.is_key = is_key;
  if (c.at("type") == "none") {
    r.enabled = false;
    return r;
  }
  if (c.at("type") != "qaq") throw error("qaq: cannot configure a QAQ role from '{}'", c.at("type").dump());
  const std::string level = c.at("level").get<std::string>();
  r.level = level == "token" ? QaqLevel::Token : level == "layer" ? QaqLevel::Layer : QaqLevel::Head;
  r.group.symmetric = c.at("symmetric").get<bool>();
  r.group.method = c.at("method") == "normal" ? qaq::Method::Normal : qaq::Method::Uniform;
  r.group.center = c.at("center") == "midrange" ? qaq::Center::Midrange : qaq::Center::Mean;
  r.group.zero_bits_mean = c.at("zero_bits") == "mean";
  r.group.outliers_ratio = c.at("outliers_ratio").get<double>();
  r.use_attentions = c.at("use_attentions").get<bool>();
  r.n_bits_uniform = c.at("n_bits_uniform").get<int>();
  r.last_n_attentions = c.at("last_n_attentions").get<int>();
  r.target_quantization_error = c.at("target_quantization_error").get<double>();
  r.n_bits_min = c.at("n_bits_min").get<int>();
  r.n_bits_max = c.at("n_bits_max").get<int>();
  r.q_norm = c.at("q_norm").get<double>();
  r.bits_formula = c.at("bits_formula") == "paper" ? qaq::BitsFormula::Paper : qaq::BitsFormula::Code;
  return r;
}

std::unique_ptr<KVCachePolicy> make_qaq_policy(const nlohmann::json& m) {
  check(m);
  const auto sched = m.at("policy").at("schedule") == "one_shot" ? QaqSchedule::OneShot : QaqSchedule::Streaming;
  return std::make_unique<QaqPolicy>(qaq_role_config(m.at("key"), true), qaq_role_config(m.at("value"), false),
                                     sched);
}

double qaq_paper_bpv(const KVCachePolicy& p) {
  const auto* q = dynamic_cast<const QaqPolicy*>(&p);
  return q ? q->paper_bpv() : std::nan("");
}

double qaq_key_q_norm(const KVCachePolicy& p) {
  const auto* q = dynamic_cast<const QaqPolicy*>(&p);
  return q ? q->key_q_norm() : std::nan("");
}

}  // namespace kvx
