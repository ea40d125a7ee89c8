#include "experiments/protocol.h"

#include <fmt/format.h>

#include "core/common/error.h"
#include "experiments/generation.h"
#include "experiments/kl_divergence.h"
#include "experiments/long_ppl.h"
#include "experiments/multiple_choice.h"
#include "experiments/passkey.h"
#include "experiments/perplexity.h"
#include "quantizers/param_schema.h"

namespace kvx {

ProtocolTraits noop_protocol();  // experiments/noop_protocol.cpp

// One row per protocol; each protocol's parameters and runner live in its own file.
const std::vector<ProtocolTraits>& protocol_table() {
  static const std::vector<ProtocolTraits> table = {
      noop_protocol(),
      perplexity_protocol(),
      kl_divergence_protocol(),
      generation_protocol(),
      passkey_protocol(),
      long_ppl_protocol(),
      multiple_choice_protocol(),
  };
  return table;
}

const ProtocolTraits* find_protocol(const std::string& name) {
  for (const auto& p : protocol_table())
    if (p.name == name) return &p;
  return nullptr;
}

nlohmann::json resolve_protocol(const nlohmann::json& spec) {
  if (!spec.is_object() || !spec.contains("name") || !spec["name"].is_string())
    throw ParamError({}, "a protocol must be a mapping with 'name'");
  const auto* p = find_protocol(spec["name"].get<std::string>());
  if (!p) {
    std::string names;
    for (const auto& t : protocol_table()) names += (names.empty() ? "" : ", ") + t.name;
    throw ParamError({"name"}, fmt::format("unknown protocol '{}' (known: {})",
                                           spec["name"].get<std::string>(), names));
  }
  MethodTraits as_traits;
  as_traits.name = p->name;
  as_traits.params = p->params;
  nlohmann::json given = spec;
  given.erase("name");
  given["type"] = p->name;
  auto out = resolve_params(as_traits, given, {});
  out.erase("type");
  out["name"] = p->name;
  return out;
}

nlohmann::json run_job(const nlohmann::json& job, JobContext& ctx) {
  const std::string name = job.at("protocol").at("name").get<std::string>();
  const auto* p = find_protocol(name);
  if (!p) throw error("unknown protocol '{}'", name);
  return p->run(job, ctx);
}

}  // namespace kvx
