// Paths and reference.json of the fixture models (data/models/*), found through KVX_SOURCE_DIR.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace kvx::test {

inline std::string source_dir() {
  if (const char* e = std::getenv("KVX_SOURCE_DIR")) return e;
  return KVX_SOURCE_DIR;
}
inline std::string model_dir(const std::string& name) { return source_dir() + "/data/models/" + name; }
inline std::string wikitext_test() { return source_dir() + "/data/wikitext-2/test.txt"; }

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
inline nlohmann::json reference(const std::string& name) {
  return nlohmann::json::parse(read_text(model_dir(name) + "/reference.json"));
}
inline bool slow_tests_enabled() {
  const char* e = std::getenv("KVX_SLOW");
  return e && std::string(e) == "1";
}

}  // namespace kvx::test
