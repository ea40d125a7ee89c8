#include "quantizers/kvq.h"

#include <fmt/format.h>

#include <cctype>

#include "core/cache/token_codec.h"
#include "core/common/error.h"
#include "quantizers/segments.h"

namespace kvx {
namespace {

void prepare(nlohmann::json& given, const std::string& slot) {
  if (given.contains("axis") && given["axis"].is_number_integer()) {
    const int64_t a = given["axis"].get<int64_t>();
    if (a == 0)
      given["axis"] = "token";
    else if (a == -1)
      given["axis"] = "channel";
    else
      throw ParamError({slot, "axis"},
                       fmt::format("'axis' must be token or channel (seed aliases: 0 = token, -1 = channel), got {}", a));
  }
  if (!given.contains("bits") && slot == "value") given["bits"] = 2;
}

std::shared_ptr<const TokenCodec> make(const nlohmann::json& c) {
  const std::string dt = c.at("compute_dtype").get<std::string>();
  const at::ScalarType meta = dt == "bfloat16" ? at::kBFloat16 : at::kHalf;  // auto: what the fused kernels read
  return make_affine_codec(c.at("bits").get<int>(), c.at("group").get<int64_t>(),
                           c.at("axis").get<std::string>() == "channel" ? GroupAxis::Channel : GroupAxis::Token,
                           meta);
}

// Parses "<digits>" at s[i..], advancing i; -1 when there are none.
int64_t read_int(const std::string& s, size_t& i) {
  size_t j = i;
  while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
  if (j == i || j - i > 9) return -1;
  const int64_t v = std::stoll(s.substr(i, j - i));
  i = j;
  return v;
}

}  // namespace

MethodTraits kvq_traits() {
  MethodTraits t;
  t.name = "kvq";
  t.kind = ComponentKind::Codec;
  t.summary = "affine min-max groups (Quanto), packed codes + fp16 scale/shift; default K4 V2";
  t.params = {
      {"bits", ParamType::Int, 4, 1, 8, {"1", "2", "3", "4", "8"},
       "code width; default 4 in the key slot, 2 in the value slot (seed nbits_k/nbits_v)"},
      {"axis", ParamType::Enum, "token", -1e300, 1e300, {"token", "channel"},
       "token: groups of G channels per token (seed axis 0); channel: groups of G tokens per channel (axis -1)"},
      {"group", ParamType::Int, 64, 1, 1 << 24, {}, "q_group_size G"},
      {"compute_dtype", ParamType::Enum, "auto", -1e300, 1e300, {"auto", "float16", "bfloat16"},
       "dtype of scales and shifts (auto: float16, the layout the fused kernels read; bfloat16 runs dequantize-then-attend)"},
  };
  t.bits = "1/2/3/4/8";
  t.batches = true;
  t.prepare = prepare;
  t.default_policy = "segments";
  t.kernels = kSegmentsKernels;
  t.make_codec = make;
  return t;
}

nlohmann::json parse_kvq_shorthand(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return error("method shorthand '{}': {} (expected kvq:k<bits>[c]v<bits>[c][:g<group>][:r<residual>]"
                 "[:s<sink>][:append|:sliding|:requantize_all], e.g. kvq:k4v2 or kvq:k2cv2:g32)", text, why);
  };
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t c = text.find(':', start);
    parts.push_back(text.substr(start, c == std::string::npos ? std::string::npos : c - start));
    if (c == std::string::npos) break;
    start = c + 1;
  }
  if (parts.size() < 2) throw bad("missing the bit widths");
  nlohmann::json key{{"type", "kvq"}}, value{{"type", "kvq"}}, policy{{"type", "segments"}};
  const std::string& kv = parts[1];
  size_t i = 0;
  for (const char side : {'k', 'v'}) {
    if (i >= kv.size() || kv[i] != side) throw bad(fmt::format("'{}' must be k<bits>[c]v<bits>[c]", kv));
    ++i;
    const int64_t b = read_int(kv, i);
    if (b < 0) throw bad(fmt::format("no bit width after '{}' in '{}'", side, kv));
    nlohmann::json& c = side == 'k' ? key : value;
    c["bits"] = b;
    if (i < kv.size() && kv[i] == 'c') {
      c["axis"] = "channel";
      ++i;
    }
  }
  if (i != kv.size()) throw bad(fmt::format("unexpected '{}' in '{}'", kv.substr(i), kv));
  for (size_t p = 2; p < parts.size(); ++p) {
    const std::string& s = parts[p];
    if (s == "append" || s == "sliding" || s == "requantize_all") {
      policy["flush"] = s;
      continue;
    }
    size_t j = 1;
    const int64_t v = s.empty() ? -1 : read_int(s, j);
    if (v < 0 || j != s.size()) throw bad(fmt::format("cannot read '{}'", s));
    if (s[0] == 'g') {
      key["group"] = v;
      value["group"] = v;
    } else if (s[0] == 'r') {
      policy["residual_length"] = v;
    } else if (s[0] == 's') {
      policy["sink"] = v;
    } else {
      throw bad(fmt::format("unknown suffix '{}'", s));
    }
  }
  return {{"key", key}, {"value", value}, {"policy", policy}};
}

}  // namespace kvx
