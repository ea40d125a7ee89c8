#include "quantizers/registry.h"

#include <fmt/format.h>

#include "core/common/error.h"
#include "quantizers/param_schema.h"

namespace kvx {

// The traits table: one row per component. Keep rows short; parameters live in each
// method's own file as a static schema.
const std::vector<MethodTraits>& method_table() {
  static const std::vector<MethodTraits> table = {
      {"none", ComponentKind::Codec, "full precision (compute dtype), no compression", {}, "16"},
  };
  return table;
}

const MethodTraits* find_method(const std::string& name) {
  for (const auto& t : method_table())
    if (t.name == name) return &t;
  return nullptr;
}

namespace {
nlohmann::json resolve_component(const nlohmann::json& c, const std::string& slot) {
  nlohmann::json given = c.is_string() ? nlohmann::json{{"type", c}} : c;
  if (!given.is_object() || !given.contains("type") || !given["type"].is_string())
    throw ParamError({slot}, fmt::format("'{}' must be a method name or a mapping with 'type'", slot));
  const auto* t = find_method(given["type"].get<std::string>());
  if (!t) {
    std::string names;
    for (const auto& m : method_table()) names += (names.empty() ? "" : ", ") + m.name;
    throw ParamError({slot, "type"}, fmt::format("unknown method '{}' (known: {})",
                                                 given["type"].get<std::string>(), names));
  }
  return resolve_params(*t, given, {slot});
}
}  // namespace

nlohmann::json resolve_method(const nlohmann::json& spec) {
  if (!spec.is_object()) throw ParamError({}, "a method must be a mapping with 'key' and 'value'");
  nlohmann::json out;
  for (auto it = spec.begin(); it != spec.end(); ++it)
    if (it.key() != "key" && it.key() != "value" && it.key() != "policy")
      throw ParamError({it.key()}, fmt::format("unknown method field '{}' (expected key, value, policy)", it.key()));
  out["key"] = resolve_component(spec.value("key", nlohmann::json("none")), "key");
  out["value"] = resolve_component(spec.value("value", nlohmann::json("none")), "value");
  if (spec.contains("policy")) out["policy"] = resolve_component(spec["policy"], "policy");
  return out;
}

nlohmann::json parse_method_shorthand(const std::string& text) {
  if (text == "none" || text == "fp16" || text == "full") return {{"key", "none"}, {"value", "none"}};
  throw error("unknown method shorthand '{}' (expected: none)", text);
}

std::string method_label(const nlohmann::json& m) {
  if (m["key"]["type"] == "none" && m["value"]["type"] == "none" && !m.contains("policy")) return "none";
  return m.dump();
}

std::unique_ptr<KVCachePolicy> make_policy(const nlohmann::json& m) {
  if (m["key"]["type"] == "none" && m["value"]["type"] == "none" && !m.contains("policy"))
    return make_full_precision_policy();
  throw error("method {} has no cache policy implementation", m.dump());
}

}  // namespace kvx
