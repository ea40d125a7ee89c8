#include "quantizers/segments.h"

#include <fmt/format.h>

#include "core/cache/segment_policy.h"

namespace kvx {

const char* const kSegmentsKernels =
    "cuda: kvq codes read in place for decode steps and chunks (head_dim 128, bits 2/4/8, float16 statistics, per-token "
    "values in groups of 16·k channels; keys per channel in groups of 32·2^n tokens, or per token in groups of 32/64/128 "
    "channels equal to the value groups; sinks and residual in the same launch); other codecs and longer chunks "
    "dequantize then attend; cpu: reference";

namespace {

void check(const nlohmann::json& m) {
  for (const char* slot : {"key", "value"}) {
    const std::string type = m[slot]["type"].get<std::string>();
    const auto* t = find_method(type);
    if (type != "none" && (!t || !t->make_codec))
      throw ParamError({slot, "type"}, fmt::format("'{}' cannot be stored by the segments policy "
                                                   "(it accepts none or a token codec such as kvq)", type));
  }
}

std::unique_ptr<KVCachePolicy> make(const nlohmann::json& m) {
  SegmentsConfig c;
  const auto& p = m.at("policy");
  c.sink = p.at("sink").get<int64_t>();
  c.residual_length = p.at("residual_length").get<int64_t>();
  const std::string f = p.at("flush").get<std::string>();
  c.flush = f == "append" ? FlushMode::Append : f == "sliding" ? FlushMode::Sliding : FlushMode::RequantizeAll;
  c.key_codec = make_codec(m.at("key"));
  c.value_codec = make_codec(m.at("value"));
  c.name = (m["key"]["type"] == "kvq" || m["value"]["type"] == "kvq") ? "kvq" : "segments";
  c.kernel = kernel_request(m);
  return make_segments_policy(std::move(c));
}

// "kvq k4c v2 g64 r128" (+ " s4", " append"/" sliding", " bf16" when not the default).
std::string label(const nlohmann::json& m) {
  const auto& k = m["key"];
  const auto& v = m["value"];
  const bool kq = k["type"] == "kvq", vq = v["type"] == "kvq";
  auto side = [](const nlohmann::json& c, char s) -> std::string {
    if (c["type"] == "none") return fmt::format("{}fp", s);
    if (c["type"] != "kvq") return fmt::format("{}{}", s, c["type"].get<std::string>());
    return fmt::format("{}{}{}", s, c["bits"].get<int>(), c["axis"] == "channel" ? "c" : "");
  };
  std::string out = fmt::format("{} {} {}", kq || vq ? "kvq" : "segments", side(k, 'k'), side(v, 'v'));
  if (kq && vq && k["group"] != v["group"])
    out += fmt::format(" g{}/{}", k["group"].get<int64_t>(), v["group"].get<int64_t>());
  else if (kq || vq)
    out += fmt::format(" g{}", (kq ? k : v)["group"].get<int64_t>());
  const auto& p = m["policy"];
  out += fmt::format(" r{}", p["residual_length"].get<int64_t>());
  if (p["sink"].get<int64_t>() > 0) out += fmt::format(" s{}", p["sink"].get<int64_t>());
  if (p["flush"] != "requantize_all") out += " " + p["flush"].get<std::string>();
  for (const auto* c : {&k, &v})
    if ((*c)["type"] == "kvq" && (*c)["compute_dtype"] != "auto") {
      out += (*c)["compute_dtype"] == "bfloat16" ? " bf16" : " fp16";
      break;
    }
  return out;
}

}  // namespace

MethodTraits segments_traits() {
  MethodTraits t;
  t.name = "segments";
  t.kind = ComponentKind::Policy;
  t.summary = "layout [sink fp | codec blocks | fp residual]; KVQ flush rule or sliding window";
  t.params = {
      {"sink", ParamType::Int, 0, 0, 1 << 30, {}, "first positions kept in full precision"},
      {"residual_length", ParamType::Int, 128, 0, 1 << 30, {}, "fp residual: flush threshold or window"},
      {"flush", ParamType::Enum, "requantize_all", -1e300, 1e300, {"requantize_all", "append", "sliding"},
       "how residual tokens enter the compressed body"},
  };
  t.bits = "-";
  t.batches = true;
  t.kernels = kSegmentsKernels;
  t.check = check;
  t.make_policy = make;
  t.label = label;
  return t;
}

}  // namespace kvx
