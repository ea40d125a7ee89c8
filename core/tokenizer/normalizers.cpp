// Normalizers (see text_steps.h).
#include <cctype>

#include "core/tokenizer/pattern.h"
#include "core/tokenizer/text_steps.h"

namespace kvx::tok {
namespace {

class SequenceNorm : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> steps;
  void apply(std::string& s) const override {
    for (const auto& st : steps) st->apply(s);
  }
};

class PrependNorm : public Normalizer {
 public:
  std::string prefix;
  void apply(std::string& s) const override {
    if (!s.empty()) s.insert(0, prefix);  // HF prepends only to non-empty text
  }
};

class ReplaceNorm : public Normalizer {
 public:
  ReplaceNorm(const JsonNode& n) : pattern(n.req("pattern")), content(n.req("content").str()) {}
  Pattern pattern;
  std::string content;
  void apply(std::string& s) const override { s = pattern.replace_all(s, content); }
};

class StripNorm : public Normalizer {
 public:
  bool left = true, right = true;
  void apply(std::string& s) const override {
    size_t b = 0, e = s.size();
    if (left) while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
    if (right) while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
    s = s.substr(b, e - b);
  }
};

class IdentityNorm : public Normalizer {
 public:
  void apply(std::string&) const override {}
};

}  // namespace

std::unique_ptr<Normalizer> parse_normalizer(const JsonNode& n, int depth) {
  if (n.missing()) return nullptr;
  if (!n.is_object()) n.fail("must be an object or null");
  if (depth > kMaxSequenceDepth) n.fail("nests Sequence too deeply");
  const std::string type = n.req("type").str();
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceNorm>();
    JsonNode list = n.req("normalizers");
    for (size_t i = 0; i < list.array_size(); ++i) {
      auto st = parse_normalizer(list.at(i), depth + 1);
      if (st) seq->steps.push_back(std::move(st));
    }
    return seq;
  }
  if (type == "Prepend") {
    auto p = std::make_unique<PrependNorm>();
    p->prefix = n.req("prepend").str();
    return p;
  }
  if (type == "Replace") return std::make_unique<ReplaceNorm>(n);
  if (type == "Strip") {
    auto p = std::make_unique<StripNorm>();
    p->left = n.bool_or("strip_left", true);
    p->right = n.bool_or("strip_right", true);
    return p;
  }
  if (type == "NFC") return std::make_unique<IdentityNorm>();
  n.get("type").fail("'" + type + "' is not supported (expected Sequence, Prepend, Replace, Strip or NFC)");
}

}  // namespace kvx::tok
