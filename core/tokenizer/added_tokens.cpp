#include "core/tokenizer/added_tokens.h"

#include <algorithm>
#include <cctype>

namespace kvx::tok {
namespace {
bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }
// Word characters for single_word; any non-ASCII byte counts as part of a word.
bool is_word(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x80 || std::isalnum(u) || c == '_';
}
}  // namespace

AddedTokens::AddedTokens(const JsonNode& list) {
  if (list.missing()) return;
  for (size_t i = 0; i < list.array_size(); ++i) {
    JsonNode t = list.at(i);
    AddedToken a;
    const int64_t id = t.req("id").integer();
    if (id < 0 || id > INT32_MAX - 1) t.get("id").fail("must be an id in [0, 2^31-1)");
    a.id = static_cast<int32_t>(id);
    a.content = t.req("content").str();
    if (a.content.empty()) t.get("content").fail("must not be empty");
    a.special = t.bool_or("special", false);
    a.lstrip = t.bool_or("lstrip", false);
    a.rstrip = t.bool_or("rstrip", false);
    a.single_word = t.bool_or("single_word", false);
    if (by_content_.count(a.content)) continue;  // first definition wins
    by_id_[a.id] = tokens_.size();
    by_content_[a.content] = tokens_.size();
    max_id_ = std::max<int64_t>(max_id_, a.id);
    tokens_.push_back(std::move(a));
  }
  for (size_t k = 0; k < tokens_.size(); ++k)
    bucket_[static_cast<unsigned char>(tokens_[k].content[0])].push_back(k);
  for (auto& b : bucket_)
    std::stable_sort(b.begin(), b.end(),
                     [&](size_t x, size_t y) { return tokens_[x].content.size() > tokens_[y].content.size(); });
}

const AddedToken* AddedTokens::by_id(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedTokens::by_content(const std::string& content) const {
  auto it = by_content_.find(content);
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

std::vector<Segment> AddedTokens::split(const std::string& text) const {
  std::vector<Segment> out;
  size_t text_start = 0;  // start of the pending plain-text run
  for (size_t p = 0; p < text.size();) {
    const auto& bucket = bucket_[static_cast<unsigned char>(text[p])];
    const AddedToken* hit = nullptr;
    for (size_t k : bucket) {
      const AddedToken& t = tokens_[k];
      if (text.compare(p, t.content.size(), t.content) != 0) continue;
      if (t.single_word) {
        const size_t e = p + t.content.size();
        if ((p > 0 && is_word(text[p - 1])) || (e < text.size() && is_word(text[e]))) continue;
      }
      hit = &t;
      break;
    }
    if (!hit) {
      ++p;
      continue;
    }
    size_t b = p, e = p + hit->content.size();
    if (hit->lstrip)
      while (b > text_start && is_space(text[b - 1])) --b;
    if (hit->rstrip)
      while (e < text.size() && is_space(text[e])) ++e;
    if (b > text_start) out.push_back({text_start, b, -1});
    out.push_back({b, e, hit->id});
    text_start = p = e;
  }
  if (text_start < text.size()) out.push_back({text_start, text.size(), -1});
  return out;
}

}  // namespace kvx::tok
