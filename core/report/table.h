// A finished report table and its renderings: GitHub markdown, CSV (RFC 4180 quoting),
// LaTeX (booktabs, special characters escaped) and JSON (an array of row objects with raw
// values). Output is byte-for-byte deterministic for a given table.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace kvx::report {

struct Table {
  std::vector<std::string> header;
  std::vector<bool> numeric;                     // per column: right-aligned in md, "r" in LaTeX
  std::vector<std::vector<std::string>> cells;   // formatted text
  std::vector<std::vector<nlohmann::json>> raw;  // values for JSON (null where empty)
};

std::string render(const Table& t, const std::string& format);  // md | csv | latex | json

}  // namespace kvx::report
