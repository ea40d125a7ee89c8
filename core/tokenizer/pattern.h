// The {"String": "..."} / {"Regex": "..."} pattern object that Split, Replace and friends
// use in tokenizer.json: finds all non-overlapping matches, left to right.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tokenizer/json_node.h"
#include "core/tokenizer/regex.h"

namespace kvx::tok {

class Pattern {
 public:
  explicit Pattern(const JsonNode& node);  // throws kvx::Error naming node.path()
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;
  // Replaces every match with `content` (Replace normalizer / decoder).
  std::string replace_all(std::string_view s, const std::string& content) const;

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
};

}  // namespace kvx::tok
