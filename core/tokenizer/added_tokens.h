// added_tokens of a tokenizer.json: strings matched verbatim in the input before any
// normalization (leftmost, then longest match), each encoding to its own id. Honors
// lstrip / rstrip (absorb neighbouring whitespace) and single_word (only between
// non-word characters). Special ones can be skipped when decoding.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tokenizer/json_node.h"

namespace kvx::tok {

struct AddedToken {
  int32_t id;
  std::string content;
  bool special, lstrip, rstrip, single_word;
};

// A piece of input: either plain text [begin, end) or an added token.
struct Segment {
  size_t begin, end;
  int32_t token_id;  // -1 for plain text
};

class AddedTokens {
 public:
  AddedTokens() = default;
  explicit AddedTokens(const JsonNode& list);  // a missing node means none

  std::vector<Segment> split(const std::string& text) const;
  const AddedToken* by_id(int32_t id) const;
  const AddedToken* by_content(const std::string& content) const;
  int64_t max_id() const { return max_id_; }

 private:
  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  std::unordered_map<std::string, size_t> by_content_;
  std::vector<size_t> bucket_[256];  // by first byte, longest content first
  int64_t max_id_ = -1;
};

}  // namespace kvx::tok
