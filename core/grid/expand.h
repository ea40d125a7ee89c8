// Expansion of one grid entry (a protocol or a method): every list-valued leaf multiplies the
// variants (cartesian product); the entry's `zip:` mapping of dotted paths to equal-length
// lists varies those paths together. Each variant remembers which YAML element each expanded
// value came from, so that an invalid value is reported at its own line and column.
#pragma once
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "core/grid/yaml_json.h"

namespace kvx::grid {

struct Variant {
  nlohmann::json spec;
  std::map<std::string, std::string> origin;  // dotted path -> YAML path of its value
};

// body: the entry without `zip`; body_path: its YAML path; zip may be null.
std::vector<Variant> expand_entry(const nlohmann::json& body, const std::string& body_path,
                                  const nlohmann::json& zip, const std::string& zip_path, const YamlDoc& doc);

// "key.bits" on {"key": {"bits": 4}} -> 4; null pointer when absent.
const nlohmann::json* get_dotted(const nlohmann::json& obj, const std::string& dotted);
// Creates intermediate mappings; a string component ("key: kvq") becomes {"type": "kvq"}.
void set_dotted(nlohmann::json& obj, const std::string& dotted, const nlohmann::json& value);
// {"key": {"bits": 4}} with prefix "" -> {"key.bits": 4}
void flatten_into(const nlohmann::json& obj, const std::string& prefix, nlohmann::json& out);
std::string join_dotted(const std::vector<std::string>& parts);
std::vector<std::string> split_dotted(const std::string& dotted);

}  // namespace kvx::grid
