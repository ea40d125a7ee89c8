// Validation of one component's parameters against its ParamSpec list: unknown keys, wrong
// types, out-of-range and not-allowed values raise ParamError with the key's path.
#pragma once
#include "quantizers/registry.h"

namespace kvx {

// `given` is the component's JSON object ("type" included); `path` locates it in the spec.
nlohmann::json resolve_params(const MethodTraits& traits, const nlohmann::json& given,
                              const std::vector<std::string>& path);

}  // namespace kvx
