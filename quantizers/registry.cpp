#include "quantizers/registry.h"

#include <fmt/format.h>

#include "core/common/error.h"
#include "quantizers/aqua.h"
#include "quantizers/attention_prune.h"
#include "quantizers/dynamic_kv.h"
#include "quantizers/h2o.h"
#include "quantizers/kmeans.h"
#include "quantizers/kvq.h"
#include "quantizers/param_schema.h"
#include "quantizers/qaq.h"
#include "quantizers/razor.h"
#include "quantizers/segments.h"
#include "quantizers/selective_int8.h"
#include "quantizers/sink_window.h"
#include "quantizers/uncomp.h"
#include "quantizers/zack.h"

namespace kvx {

namespace {
MethodTraits none_traits() {
  MethodTraits t;
  t.name = "none";
  t.summary = "full precision (compute dtype), no compression";
  t.bits = "16";
  t.batches = true;
  t.kernels = "cuda: SDPA over the stored rows in place (decode steps on kvx's full-precision tiles where Torch < 2.5 "
              "has no GQA decode in SDPA); cpu: reference";
  return t;
}
}  // namespace

// The traits table: one row per component. Keep rows short; parameters live in each
// method's own file as a static schema.
const std::vector<MethodTraits>& method_table() {
  static const std::vector<MethodTraits> table = {
      none_traits(),
      kvq_traits(),
      segments_traits(),
      selective_int8_traits(),
      sink_window_traits(),
      qaq_traits(),
      qaq_cache_traits(),
      aqua_traits(),
      attention_prune_traits(),
      kmeans_cluster_traits(),
      h2o_traits(),
      zack_traits(),
      dynamic_kv_traits(),
      razor_traits(),
      uncomp_traits(),
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
  const ComponentKind want = slot == "policy" ? ComponentKind::Policy : ComponentKind::Codec;
  auto names_of = [](ComponentKind k) {
    std::string names;
    for (const auto& m : method_table())
      if (m.kind == k) names += (names.empty() ? "" : ", ") + m.name;
    return names;
  };
  if (!t)
    throw ParamError({slot, "type"}, fmt::format("unknown {} '{}' (known: {})",
                                                 want == ComponentKind::Policy ? "policy" : "method",
                                                 given["type"].get<std::string>(), names_of(want)));
  if (t->kind != want)
    throw ParamError({slot, "type"},
                     fmt::format("'{}' is a {} and cannot be used as '{}' (expected one of: {})", t->name,
                                 t->kind == ComponentKind::Policy ? "cache policy" : "key/value codec",
                                 slot, names_of(want)));
  if (t->prepare) t->prepare(given, slot);
  return resolve_params(*t, given, {slot});
}
}  // namespace

nlohmann::json resolve_method(const nlohmann::json& spec) {
  if (!spec.is_object()) throw ParamError({}, "a method must be a mapping with 'key' and 'value'");
  nlohmann::json out;
  for (auto it = spec.begin(); it != spec.end(); ++it)
    if (it.key() != "key" && it.key() != "value" && it.key() != "policy" && it.key() != "kernel")
      throw ParamError({it.key()}, fmt::format("unknown method field '{}' (expected key, value, policy, kernel)", it.key()));
  out["key"] = resolve_component(spec.value("key", nlohmann::json("none")), "key");
  out["value"] = resolve_component(spec.value("value", nlohmann::json("none")), "value");
  if (spec.contains("policy")) {
    out["policy"] = resolve_component(spec["policy"], "policy");
  } else {
    // A codec that needs a token layout brings its default policy (kvq -> segments), filled in
    // here so that the layout's defaults enter the job key.
    const char* def = nullptr;
    for (const char* slot : {"key", "value"}) {
      const auto* t = find_method(out[slot]["type"].get<std::string>());
      if (t && t->default_policy && !def) def = t->default_policy;
    }
    if (def) out["policy"] = resolve_component(nlohmann::json(def), "policy");
  }
  if (out.contains("policy")) {
    const auto* t = find_method(out["policy"]["type"].get<std::string>());
    if (t && t->check) t->check(out);
  }
  if (spec.contains("kernel")) {
    const auto& k = spec["kernel"];
    if (!k.is_string() || (k != "auto" && k != "fused" && k != "dequant_then_attend"))
      throw ParamError({"kernel"}, fmt::format("'kernel' must be auto, fused or dequant_then_attend, got {}", k.dump()));
    const auto* t = out.contains("policy") ? find_method(out["policy"]["type"].get<std::string>()) : find_method("none");
    if (k != "auto" && !(t && t->kernels))
      throw ParamError({"kernel"}, fmt::format("'{}' has no fused kernel, so 'kernel: {}' cannot apply (methods with one: "
                                               "none, kvq (segments), selective_int8)", method_label(out), k.get<std::string>()));
    if (k != "auto") out["kernel"] = k;  // auto stays implicit: job keys of specs without it are unchanged
  }
  return out;
}

bool method_batches(const nlohmann::json& resolved) {
  for (const char* slot : {"key", "value", "policy"}) {
    if (!resolved.contains(slot)) continue;
    const auto* t = find_method(resolved[slot].at("type").get<std::string>());
    if (!t || !t->batches) return false;
  }
  return true;
}

KernelRequest kernel_request(const nlohmann::json& resolved) {
  return parse_kernel_request(resolved.value("kernel", std::string("auto")));
}

nlohmann::json parse_method_shorthand(const std::string& text) {
  if (text == "none" || text == "fp16" || text == "full") return {{"key", "none"}, {"value", "none"}};
  if (!text.empty() && text[0] == '{') return nlohmann::json::parse(text);  // a full JSON method spec
  const std::string head = text.substr(0, text.find(':'));
  if (head == "kvq") return parse_kvq_shorthand(text);
  if (head == "aqua") return parse_aqua_shorthand(text);
  if (head == "selective_int8") return parse_selective_int8_shorthand(text);
  if (head == "sink_window") return parse_sink_window_shorthand(text);
  throw error("unknown method shorthand '{}' (expected none, fp16, kvq:k4v2[...], selective_int8[:s16:w32], "
              "sink_window[:s16:w32])", text);
}

std::string method_label(const nlohmann::json& m) {
  const std::string kernel = m.contains("kernel") ? " kernel=" + m["kernel"].get<std::string>() : "";
  if (m["key"]["type"] == "none" && m["value"]["type"] == "none" && !m.contains("policy")) return "none" + kernel;
  if (m.contains("policy")) {
    const auto* t = find_method(m["policy"]["type"].get<std::string>());
    if (t && t->label) return t->label(m) + kernel;
  }
  return m.dump();
}

std::unique_ptr<KVCachePolicy> make_policy(const nlohmann::json& m) {
  if (m.contains("policy")) {
    const auto* t = find_method(m["policy"]["type"].get<std::string>());
    if (t && t->make_policy) return t->make_policy(m);
  } else if (m["key"]["type"] == "none" && m["value"]["type"] == "none") {
    return make_full_precision_policy(kernel_request(m));
  }
  throw error("method {} has no cache policy implementation", m.dump());
}

std::shared_ptr<const TokenCodec> make_codec(const nlohmann::json& component) {
  const std::string type = component.at("type").get<std::string>();
  if (type == "none") return nullptr;
  const auto* t = find_method(type);
  if (!t || !t->make_codec) throw error("'{}' cannot be used as a key/value codec here", type);
  return t->make_codec(component);
}

}  // namespace kvx
