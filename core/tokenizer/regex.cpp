#include "core/tokenizer/regex.h"

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include "core/common/error.h"
#include "core/tokenizer/unicode.h"

namespace kvx::tok {

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {
std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof buf) < 0) return "PCRE2 error " + std::to_string(code);
  return reinterpret_cast<const char*>(buf);
}
}  // namespace

struct Regex::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
  std::string where;
};

Regex::Regex(const std::string& pattern, const std::string& where) : impl_(std::make_unique<Impl>()) {
  impl_->where = where;
  int err = 0;
  PCRE2_SIZE err_off = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
  if (impl_->code == nullptr)
    throw kvx::error("{}: regex does not compile at offset {}: {} (expected a PCRE/Oniguruma-compatible pattern)",
                     where, static_cast<size_t>(err_off), pcre2_message(err));
  impl_->jit = pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() {
  if (impl_ && impl_->code) pcre2_code_free(impl_->code);
}

void Regex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  // Per-call match state keeps the object shareable between threads. The match limit
  // turns a catastrophically backtracking pattern from a hostile file into an error.
  struct Guard {
    pcre2_match_data* md = nullptr;
    pcre2_match_context* mc = nullptr;
    pcre2_jit_stack* js = nullptr;
    ~Guard() {
      if (md) pcre2_match_data_free(md);
      if (js) pcre2_jit_stack_free(js);
      if (mc) pcre2_match_context_free(mc);
    }
  } g;
  g.md = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
  g.mc = pcre2_match_context_create(nullptr);
  if (!g.md || !g.mc) throw kvx::error("{}: out of memory creating regex match data", impl_->where);
  pcre2_set_match_limit(g.mc, 50000000);
  if (impl_->jit) {
    g.js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (g.js) pcre2_jit_stack_assign(g.mc, nullptr, g.js);
  }
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t pos = 0;
  while (pos < s.size()) {
    int rc = pcre2_match(impl_->code, subject, s.size(), pos, PCRE2_NO_UTF_CHECK, g.md, g.mc);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw kvx::error("{}: regex matching failed: {}", impl_->where, pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(g.md);
    size_t b = ov[0], e = ov[1];
    if (e < b || e > s.size()) break;  // \K tricks can report odd spans; stop rather than loop
    if (e == b) {
      // Empty matches split nothing; step over one character and keep searching.
      pos = b + (b < s.size() ? utf8_char_len(s, b) : 1);
      continue;
    }
    out.emplace_back(b, e);
    pos = e;
  }
}

}  // namespace kvx::tok
