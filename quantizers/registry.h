// The method registry: one traits row per component (ggml's type_traits style). A component is
// a key/value codec (none, kvq, selective_int8, qaq, ...) or a whole-cache policy (sink_window,
// h2o, attention_prune, aqua, ...). Adding a method is one file pair plus one row in
// registry.cpp.
//
// A method spec is JSON:
//   {"key": {"type": "kvq", "bits": 4, ...}, "value": {"type": "kvq", "bits": 2, ...},
//    "policy": {"type": "...", ...},          // "policy" optional
//    "kernel": "fused"}                       // optional: auto (default) | fused | dequant_then_attend
// resolve_method() fills defaults and validates every key against the schemas; errors carry
// the JSON path of the offending key so the grid can point at the YAML line and column.
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/cache/kv_cache_policy.h"

namespace kvx {

class TokenCodec;  // core/cache/token_codec.h

enum class ParamType { Int, Float, Bool, String, Enum };

struct ParamSpec {
  std::string name;
  ParamType type = ParamType::Int;
  nlohmann::json def;                // default value (null = required)
  double min = -1e300, max = 1e300;  // inclusive range for Int/Float
  std::vector<std::string> choices;  // Enum values; Int params may also list allowed values here
  std::string help;
};

// Validation failure: path is the key path inside the spec, e.g. {"key", "bits"}.
struct ParamError : std::runtime_error {
  ParamError(std::vector<std::string> p, const std::string& msg)
      : std::runtime_error(msg), path(std::move(p)) {}
  std::vector<std::string> path;
};

enum class ComponentKind { Codec, Policy };

struct MethodTraits {
  std::string name;
  ComponentKind kind = ComponentKind::Codec;
  std::string summary;
  std::vector<ParamSpec> params;
  std::string bits;              // human-readable bit widths for `kvx list`, e.g. "2/4"
  bool needs_attention = false;  // wants the model's attention probabilities
  bool needs_calibration = false;
  // Keeps the sequences of a batch apart (codecs: encodes each (sequence, head) on its own;
  // policies: no state shared across sequences), so batch N gives batch 1's numbers. Protocols run
  // methods without it at batch 1.
  bool batches = false;
  // Fused attention kernels the method's storage runs (devices and cases), shown by `kvx list`;
  // null: none (dense attention over what the policy returns).
  const char* kernels = nullptr;

  // Optional hooks (null when unused); rows that need them are built by a function in the
  // method's own file (e.g. kvq_traits() in quantizers/kvq.cpp).
  // Adjusts a component's given JSON before validation: aliases, role-dependent defaults.
  // slot is "key", "value" or "policy".
  void (*prepare)(nlohmann::json& given, const std::string& slot) = nullptr;
  // Codecs: the policy filled in when the spec names none (e.g. kvq -> "segments").
  const char* default_policy = nullptr;
  // Codecs: builds the token codec from the resolved component.
  std::shared_ptr<const TokenCodec> (*make_codec)(const nlohmann::json& component) = nullptr;
  // Policies: checks the whole resolved spec (e.g. which codecs it accepts); throws ParamError.
  void (*check)(const nlohmann::json& resolved) = nullptr;
  // Policies: builds the cache policy from the resolved spec.
  std::unique_ptr<KVCachePolicy> (*make_policy)(const nlohmann::json& resolved) = nullptr;
  // Policies: short table label of the resolved spec (method_label).
  std::string (*label)(const nlohmann::json& resolved) = nullptr;
};

const std::vector<MethodTraits>& method_table();
const MethodTraits* find_method(const std::string& name);

// Defaults filled, every key validated; the result is canonical (sorted keys) and enters the
// job key.
nlohmann::json resolve_method(const nlohmann::json& spec);
// Shorthand -> (unresolved) spec, for `kvx eval --method`:
//   none | fp16 | full
//   kvq:k<bits>[c]v<bits>[c][:g<group>][:r<residual>][:s<sink>][:append|:sliding|:requantize_all]
//       ('c' after a bit width = per-channel groups for that side, e.g. kvq:k2cv2)
//   selective_int8[:s<sink>][:w<window>]     sink_window[:s<sink>][:w<window>]
nlohmann::json parse_method_shorthand(const std::string& text);
// Short human label for tables, e.g. "kvq k4c v2 g64 r128".
std::string method_label(const nlohmann::json& resolved);
// Whether every component of a resolved spec batches (MethodTraits::batches).
bool method_batches(const nlohmann::json& resolved);
// The spec's `kernel` request (auto when absent), for the policy factories.
KernelRequest kernel_request(const nlohmann::json& resolved);
// Build the cache policy for one sequence from a resolved spec.
std::unique_ptr<KVCachePolicy> make_policy(const nlohmann::json& resolved);
// Token codec of one resolved key/value component; nullptr for "none" (full precision).
std::shared_ptr<const TokenCodec> make_codec(const nlohmann::json& component);

}  // namespace kvx
