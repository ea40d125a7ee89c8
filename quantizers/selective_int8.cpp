#include "quantizers/selective_int8.h"

#include <fmt/format.h>

#include "core/cache/segment_policy.h"
#include "core/common/error.h"

namespace kvx {
namespace {

void check(const nlohmann::json& m) { require_no_codecs(m, "selective_int8"); }

std::unique_ptr<KVCachePolicy> make(const nlohmann::json& m) {
  SegmentsConfig c;
  c.sink = m.at("policy").at("sink_size").get<int64_t>();
  c.residual_length = m.at("policy").at("window_size").get<int64_t>();
  c.flush = FlushMode::Sliding;
  c.key_codec = make_int8_codec();
  c.value_codec = make_int8_codec();
  c.name = "selective_int8";
  c.kernel = kernel_request(m);
  return make_segments_policy(std::move(c));
}

std::string label(const nlohmann::json& m) {
  return fmt::format("selective_int8 s{} w{}", m["policy"]["sink_size"].get<int64_t>(),
                     m["policy"]["window_size"].get<int64_t>());
}

}  // namespace

void require_no_codecs(const nlohmann::json& m, const std::string& policy) {
  for (const char* slot : {"key", "value"})
    if (m[slot]["type"] != "none")
      throw ParamError({slot, "type"},
                       fmt::format("policy '{}' stores keys and values itself; leave '{}' unset or 'none' (got '{}')",
                                   policy, slot, m[slot]["type"].get<std::string>()));
}

nlohmann::json parse_sink_window_style_shorthand(const std::string& text, const std::string& name) {
  nlohmann::json policy{{"type", name}};
  size_t start = name.size();
  while (start < text.size()) {
    if (text[start] != ':') break;
    const size_t c = text.find(':', start + 1);
    const std::string s = text.substr(start + 1, c == std::string::npos ? std::string::npos : c - start - 1);
    const std::string digits = s.size() > 1 ? s.substr(1) : "";
    const bool ok = !digits.empty() && digits.size() <= 9 &&
                    digits.find_first_not_of("0123456789") == std::string::npos && (s[0] == 's' || s[0] == 'w');
    if (!ok)
      throw error("method shorthand '{}': cannot read '{}' (expected {}[:s<sink>][:w<window>], e.g. {}:s16:w32)",
                  text, s, name, name);
    policy[s[0] == 's' ? "sink_size" : "window_size"] = std::stoll(digits);
    start = c == std::string::npos ? text.size() : c;
  }
  if (start != text.size() || text.compare(0, name.size(), name) != 0)
    throw error("method shorthand '{}': expected {}[:s<sink>][:w<window>]", text, name);
  return {{"key", "none"}, {"value", "none"}, {"policy", policy}};
}

nlohmann::json parse_selective_int8_shorthand(const std::string& text) {
  return parse_sink_window_style_shorthand(text, "selective_int8");
}

MethodTraits selective_int8_traits() {
  MethodTraits t;
  t.name = "selective_int8";
  t.kind = ComponentKind::Policy;
  t.summary = "sinks + recent window fp, older tokens int8 absmax per token/head (fp32 scale)";
  t.params = {
      {"sink_size", ParamType::Int, 16, 0, 1 << 30, {}, "first positions kept fp"},
      {"window_size", ParamType::Int, 32, 0, 1 << 30, {}, "most recent positions kept fp"},
  };
  t.bits = "8";
  t.batches = true;
  t.kernels = "cuda: int8 codes read in place with sinks and window in one launch, decode steps and chunks "
              "(head_dim 128); cpu: reference";
  t.check = check;
  t.make_policy = make;
  t.label = label;
  return t;
}

}  // namespace kvx
