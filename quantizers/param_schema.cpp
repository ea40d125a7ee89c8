#include "quantizers/param_schema.h"

#include <fmt/format.h>

#include <cmath>

namespace kvx {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

nlohmann::json check_value(const ParamSpec& p, const nlohmann::json& v,
                           const std::vector<std::string>& path) {
  auto fail = [&](const std::string& what) {
    throw ParamError(path, fmt::format("'{}' {}", p.name, what));
  };
  switch (p.type) {
    case ParamType::Int: {
      if (!v.is_number_integer() && !(v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()))
        fail(fmt::format("must be an integer, got {}", v.dump()));
      int64_t x = v.get<int64_t>();
      if (x < p.min || x > p.max) fail(fmt::format("must be in [{}, {}], got {}", p.min, p.max, x));
      if (!p.choices.empty()) {
        bool ok = false;
        for (const auto& c : p.choices) ok = ok || c == std::to_string(x);
        if (!ok) fail(fmt::format("must be one of {}, got {}", join(p.choices), x));
      }
      return x;
    }
    case ParamType::Float: {
      if (!v.is_number()) fail(fmt::format("must be a number, got {}", v.dump()));
      double x = v.get<double>();
      if (!(x >= p.min && x <= p.max)) fail(fmt::format("must be in [{}, {}], got {}", p.min, p.max, x));
      return x;
    }
    case ParamType::Bool:
      if (!v.is_boolean()) fail(fmt::format("must be true or false, got {}", v.dump()));
      return v;
    case ParamType::String:
      if (!v.is_string()) fail(fmt::format("must be a string, got {}", v.dump()));
      return v;
    case ParamType::Enum: {
      std::string s = v.is_string() ? v.get<std::string>() : v.dump();
      for (const auto& c : p.choices)
        if (c == s) return c;
      fail(fmt::format("must be one of {}, got {}", join(p.choices), v.dump()));
    }
  }
  return v;
}

}  // namespace

nlohmann::json resolve_params(const MethodTraits& traits, const nlohmann::json& given,
                              const std::vector<std::string>& path) {
  if (!given.is_object())
    throw ParamError(path, fmt::format("'{}' parameters must be a mapping", traits.name));
  nlohmann::json out = nlohmann::json::object();
  out["type"] = traits.name;
  for (auto it = given.begin(); it != given.end(); ++it) {
    if (it.key() == "type") continue;
    const ParamSpec* spec = nullptr;
    for (const auto& p : traits.params)
      if (p.name == it.key()) spec = &p;
    auto kp = path;
    kp.push_back(it.key());
    if (!spec) {
      std::vector<std::string> names;
      for (const auto& p : traits.params) names.push_back(p.name);
      throw ParamError(kp, fmt::format("unknown parameter '{}' for '{}' (expected: {})", it.key(),
                                       traits.name, names.empty() ? "no parameters" : join(names)));
    }
    out[it.key()] = check_value(*spec, it.value(), kp);
  }
  for (const auto& p : traits.params) {
    if (out.contains(p.name)) continue;
    if (p.def.is_null()) {
      auto kp = path;
      kp.push_back(p.name);
      throw ParamError(kp, fmt::format("'{}' requires parameter '{}'", traits.name, p.name));
    }
    out[p.name] = p.def;
  }
  return out;
}

}  // namespace kvx
