// YAML -> JSON with source positions. Every node's position is kept under its JSON-pointer
// style path ("/methods/1/key/bits"), so that validation errors found later on the JSON
// (ParamError paths, unknown names) can print FILE:LINE:COLUMN of the YAML text.
// Plain scalars are typed the YAML 1.2 core way (null, true/false, integers, floats);
// quoted scalars stay strings. Duplicate mapping keys are an error.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kvx::grid {

struct Pos {
  int line = 0, column = 0;  // 1-based; 0 = unknown
};

struct YamlDoc {
  std::string file;  // the path as the user gave it (used in messages)
  std::string text;  // the file's contents
  nlohmann::json root;
  std::map<std::string, Pos> value_pos;  // path -> position of the value
  std::map<std::string, Pos> key_pos;    // path -> position of the mapping key naming it

  // "FILE:LINE:COL" of the deepest known prefix of `path` (the key when prefer_key).
  std::string where(const std::string& path, bool prefer_key = false) const;
};

// Limits that keep a hostile or mistaken config from exhausting memory before anything is checked,
// each refused with an error that names it: values in a config once its YAML aliases are expanded
// (a few nested aliases repeat a node billions of times), and jobs one sweep may expand to. The
// environment variables raise them.
struct GridLimits {
  int64_t config_values;  // $KVX_MAX_CONFIG_VALUES, default 200,000
  int64_t jobs;           // $KVX_MAX_JOBS, default 1,000,000
};
GridLimits grid_limits();

// Throws kvx::Error "FILE:LINE:COL: message" on a syntax error; "FILE: ..." when unreadable.
YamlDoc load_yaml_file(const std::string& path);
YamlDoc parse_yaml(const std::string& text, const std::string& file_label);

// Path helpers: child("/methods", 1) == "/methods/1".
std::string child(const std::string& path, const std::string& key);
std::string child(const std::string& path, size_t index);

}  // namespace kvx::grid
