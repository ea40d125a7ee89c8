#include "core/tokenizer/pattern.h"

namespace kvx::tok {

Pattern::Pattern(const JsonNode& node) {
  if (!node.is_object()) node.fail("must be an object {\"String\": ...} or {\"Regex\": ...}");
  JsonNode lit = node.get("String"), re = node.get("Regex");
  if (!lit.missing()) {
    literal_ = lit.str();
    if (literal_.empty()) lit.fail("must not be empty");
  } else if (!re.missing()) {
    regex_ = std::make_unique<Regex>(re.str(), re.file() + ": " + re.path());
  } else {
    node.fail("must have a \"String\" or \"Regex\" key");
  }
}

void Pattern::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  if (regex_) return regex_->find_all(s, out);
  for (size_t p = s.find(literal_); p != std::string_view::npos; p = s.find(literal_, p + literal_.size()))
    out.emplace_back(p, p + literal_.size());
}

std::string Pattern::replace_all(std::string_view s, const std::string& content) const {
  std::vector<std::pair<size_t, size_t>> m;
  find_all(s, m);
  if (m.empty()) return std::string(s);
  std::string out;
  out.reserve(s.size() + m.size() * content.size());
  size_t last = 0;
  for (auto [b, e] : m) {
    out.append(s.data() + last, b - last);
    out += content;
    last = e;
  }
  out.append(s.data() + last, s.size() - last);
  return out;
}

}  // namespace kvx::tok
