// A pre-tokenizer regex: PCRE2 in UTF + UCP mode (\p{L}, \s follow Unicode, as the
// Oniguruma patterns in tokenizer.json expect), compiled once, JIT when available.
// Thread-safe: match state lives on the caller's stack. Subjects must be valid UTF-8
// (the tokenizer validates its input once; matching skips PCRE2's per-call check).
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvx::tok {

class Regex {
 public:
  // `where` names the file and key for error messages ("x/tokenizer.json: pre_tokenizer...").
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Every non-empty match [begin, end) of s, left to right, non-overlapping.
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The pattern GPT-2's ByteLevel pre-tokenizer uses when use_regex is true.
extern const char* const kGpt2Pattern;

}  // namespace kvx::tok
