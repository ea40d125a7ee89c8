#include "core/grid/yaml_json.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>

#include "core/common/error.h"

namespace kvx::grid {

std::string child(const std::string& path, const std::string& key) { return path + "/" + key; }
std::string child(const std::string& path, size_t index) { return path + "/" + std::to_string(index); }

std::string YamlDoc::where(const std::string& path, bool prefer_key) const {
  std::string p = path;
  while (true) {
    if (prefer_key) {
      auto k = key_pos.find(p);
      if (k != key_pos.end()) return fmt::format("{}:{}:{}", file, k->second.line, k->second.column);
    }
    auto v = value_pos.find(p);
    if (v != value_pos.end()) return fmt::format("{}:{}:{}", file, v->second.line, v->second.column);
    if (p.empty()) return fmt::format("{}:1:1", file);
    p = p.substr(0, p.rfind('/'));
  }
}

namespace {

Pos pos_of(const YAML::Mark& m) {
  if (m.is_null()) return {};
  return {m.line + 1, m.column + 1};
}

// Offset of the first byte that does not start a well-formed UTF-8 sequence (RFC 3629: no
// overlong forms, surrogates or code points past U+10FFFF), or npos. YAML is Unicode text, and a
// string with broken UTF-8 would only fail later, inside nlohmann::json, without a position.
size_t first_invalid_utf8(const std::string& s) {
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned c = b[i];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) len = 1;
    else if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return i;
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      const unsigned x = b[i + k];
      if (k == 1 ? (x < lo || x > hi) : (x < 0x80 || x > 0xBF)) return i;
    }
    i += len;
  }
  return std::string::npos;
}

nlohmann::json scalar(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted: always a string
  static const std::regex int_re("[-+]?[0-9]+");
  static const std::regex float_re("[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?");
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  // A number beyond double's range (1e999) is an error, not std::out_of_range escaping.
  auto to_double = [&](const std::string& t) -> double {
    try {
      return std::stod(t);
    } catch (const std::out_of_range&) {
      const auto p = pos_of(n.Mark());
      throw error("{}:{}: number '{}' is out of range", p.line, p.column, t);
    }
  };
  if (std::regex_match(s, int_re)) {
    try {
      return static_cast<int64_t>(std::stoll(s));
    } catch (...) {
      return to_double(s);
    }
  }
  if (std::regex_match(s, float_re)) return to_double(s);
  return s;
}

int64_t limit_from_env(const char* var, int64_t def) {
  const char* e = std::getenv(var);
  if (!e || !*e) return def;
  char* end = nullptr;
  const long long v = std::strtoll(e, &end, 10);
  if (*end != '\0' || v < 1) throw error("{}='{}': expected a positive whole number", var, e);
  return v;
}

struct Converter {
  YamlDoc& doc;
  int64_t budget;  // values left (GridLimits::config_values)
  nlohmann::json convert(const YAML::Node& n, const std::string& path) {
    if (--budget < 0) {
      const auto p = pos_of(n.Mark());
      throw error("{}:{}:{}: the config holds more than {} values once its aliases are expanded (nested aliases "
                  "repeat a node many times); kvx refuses it. KVX_MAX_CONFIG_VALUES raises the limit",
                  doc.file, p.line, p.column, grid_limits().config_values);
    }
    doc.value_pos[path] = pos_of(n.Mark());
    switch (n.Type()) {
      case YAML::NodeType::Null:
      case YAML::NodeType::Undefined:
        return nullptr;
      case YAML::NodeType::Scalar:
        try {
          return scalar(n);
        } catch (const kvx::Error& e) {
          throw error("{}:{}", doc.file, e.what());  // scalar() says LINE:COLUMN: ...
        }
      case YAML::NodeType::Sequence: {
        nlohmann::json out = nlohmann::json::array();
        size_t i = 0;
        for (const auto& c : n) out.push_back(convert(c, child(path, i++)));
        return out;
      }
      case YAML::NodeType::Map: {
        nlohmann::json out = nlohmann::json::object();
        for (const auto& kv : n) {
          if (!kv.first.IsScalar()) {
            auto p = pos_of(kv.first.Mark());
            throw error("{}:{}:{}: mapping keys must be plain names", doc.file, p.line, p.column);
          }
          std::string key = kv.first.Scalar();
          std::string cp = child(path, key);
          if (out.contains(key)) {
            auto p = pos_of(kv.first.Mark());
            throw error("{}:{}:{}: duplicate key '{}'", doc.file, p.line, p.column, key);
          }
          doc.key_pos[cp] = pos_of(kv.first.Mark());
          out[key] = convert(kv.second, cp);
        }
        return out;
      }
    }
    return nullptr;
  }
};

}  // namespace

GridLimits grid_limits() {
  return {limit_from_env("KVX_MAX_CONFIG_VALUES", 200000), limit_from_env("KVX_MAX_JOBS", 1000000)};
}

YamlDoc parse_yaml(const std::string& text, const std::string& file_label) {
  YamlDoc doc;
  doc.file = file_label;
  doc.text = text;
  if (const size_t bad = first_invalid_utf8(text); bad != std::string::npos) {
    const size_t line_start = text.rfind('\n', bad == 0 ? 0 : bad - 1);
    const size_t line = size_t(std::count(text.begin(), text.begin() + long(bad), '\n')) + 1;
    const size_t col = bad - (line_start == std::string::npos || bad == 0 ? 0 : line_start + 1) + 1;
    throw error("{}:{}:{}: invalid UTF-8 (byte 0x{:02X}); configs must be UTF-8 text", file_label, line, col,
                unsigned(static_cast<unsigned char>(text[bad])));
  }
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    auto p = pos_of(e.mark);
    if (p.line == 0) p = {1, 1};
    throw error("{}:{}:{}: invalid YAML: {}", file_label, p.line, p.column, e.msg);
  }
  Converter c{doc, grid_limits().config_values};
  doc.root = c.convert(root, "");
  return doc;
}

YamlDoc load_yaml_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error("{}: cannot read the config file", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_yaml(ss.str(), path);
}

}  // namespace kvx::grid
