// Shared helpers for the tokenizer tests: repo paths and file reading.
#pragma once
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace kvx::test {

inline std::string source_dir() {
  if (const char* env = std::getenv("KVX_SOURCE_DIR")) return env;
  return KVX_SOURCE_DIR;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace kvx::test
