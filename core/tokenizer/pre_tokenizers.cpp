// Pre-tokenizers (see text_steps.h).
#include "core/tokenizer/pattern.h"
#include "core/tokenizer/text_steps.h"
#include "core/tokenizer/unicode.h"

namespace kvx::tok {
namespace {

using Spans = std::vector<std::pair<size_t, size_t>>;
enum class Behavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous };

// HF NormalizedString::split: cut s around the matches; empty pieces are dropped.
void split_by(const std::string& s, const Spans& m, Behavior b, std::vector<std::string>& out) {
  auto emit = [&](size_t from, size_t to) {
    if (to > from) out.emplace_back(s, from, to - from);
  };
  size_t last = 0;
  switch (b) {
    case Behavior::Isolated:
    case Behavior::Removed:
      for (auto [mb, me] : m) {
        emit(last, mb);
        if (b == Behavior::Isolated) emit(mb, me);
        last = me;
      }
      break;
    case Behavior::Contiguous:
      for (size_t i = 0; i < m.size();) {
        size_t mb = m[i].first, me = m[i].second;
        while (++i < m.size() && m[i].first == me) me = m[i].second;
        emit(last, mb);
        emit(mb, me);
        last = me;
      }
      break;
    case Behavior::MergedWithPrevious:
      for (auto [mb, me] : m) {
        emit(last, me);
        last = me;
      }
      break;
    case Behavior::MergedWithNext:
      for (auto [mb, me] : m) {
        emit(last, mb);
        last = mb;
      }
      break;
  }
  emit(last, s.size());
}

void split_pieces(Pieces& p, const Pattern& pat, Behavior b) {
  std::vector<std::string> out;
  out.reserve(p.items.size());
  Spans m;
  for (const auto& s : p.items) {
    m.clear();
    pat.find_all(s, m);
    split_by(s, m, b, out);
  }
  p.items.swap(out);
}

Behavior parse_behavior(const JsonNode& n) {
  const std::string s = n.str();
  if (s == "Isolated") return Behavior::Isolated;
  if (s == "Removed") return Behavior::Removed;
  if (s == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (s == "MergedWithNext") return Behavior::MergedWithNext;
  if (s == "Contiguous") return Behavior::Contiguous;
  n.fail("'" + s + "' is not a split behavior (expected Isolated, Removed, MergedWithPrevious, "
         "MergedWithNext or Contiguous)");
}

// A built-in regex (GPT-2 pattern, digits) with the same find_all as Pattern.
class FixedPattern {
 public:
  FixedPattern(const std::string& regex, const std::string& where) : re_(regex, where) {}
  void find_all(std::string_view s, Spans& out) const { re_.find_all(s, out); }

 private:
  Regex re_;
};

class SequencePre : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> steps;
  void apply(Pieces& p) const override {
    for (const auto& st : steps) st->apply(p);
  }
};

class SplitPre : public PreTokenizer {
 public:
  explicit SplitPre(const JsonNode& n) : pattern(n.req("pattern")), behavior(parse_behavior(n.req("behavior"))) {
    if (n.bool_or("invert", false)) n.get("invert").fail("true is not supported (expected false)");
  }
  Pattern pattern;
  Behavior behavior;
  void apply(Pieces& p) const override { split_pieces(p, pattern, behavior); }
};

class ByteLevelPre : public PreTokenizer {
 public:
  ByteLevelPre(bool prefix_space, bool use_regex, const std::string& where)
      : add_prefix_space(prefix_space), regex(use_regex ? std::make_unique<FixedPattern>(kGpt2Pattern, where) : nullptr) {}
  bool add_prefix_space;
  std::unique_ptr<FixedPattern> regex;
  void apply(Pieces& p) const override {
    std::vector<std::string> out;
    Spans m;
    for (auto& s : p.items) {
      if (add_prefix_space && s.compare(0, 1, " ") != 0) s.insert(0, " ");
      if (regex) {
        m.clear();
        regex->find_all(s, m);
        split_by(s, m, Behavior::Isolated, out);
      } else {
        out.push_back(std::move(s));
      }
    }
    for (auto& s : out) {
      std::string mapped;
      mapped.reserve(s.size() * 2);
      for (unsigned char c : s) mapped += byte_to_unicode(c);
      s.swap(mapped);
    }
    p.items.swap(out);
  }
};

class MetaspacePre : public PreTokenizer {
 public:
  enum class Prepend { Always, First, Never };
  std::string replacement;
  Prepend prepend = Prepend::Always;
  bool split = true;
  void apply(Pieces& p) const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < p.items.size(); ++i) {
      std::string s;
      for (char c : p.items[i]) {
        if (c == ' ')
          s += replacement;
        else
          s += c;
      }
      const bool starts = s.compare(0, replacement.size(), replacement) == 0;
      if (!starts && (prepend == Prepend::Always || (prepend == Prepend::First && i == 0 && p.first_at_start)))
        s.insert(0, replacement);
      if (split) {
        Spans m;
        for (size_t q = s.find(replacement); q != std::string::npos; q = s.find(replacement, q + replacement.size()))
          m.emplace_back(q, q + replacement.size());
        split_by(s, m, Behavior::MergedWithNext, out);
      } else {
        out.push_back(std::move(s));
      }
    }
    p.items.swap(out);
  }
};

class DigitsPre : public PreTokenizer {
 public:
  DigitsPre(bool individual, const std::string& where)
      : regex(individual ? "[0-9]" : "[0-9]+", where) {}
  FixedPattern regex;
  void apply(Pieces& p) const override {
    std::vector<std::string> out;
    Spans m;
    for (const auto& s : p.items) {
      m.clear();
      regex.find_all(s, m);
      split_by(s, m, Behavior::Isolated, out);
    }
    p.items.swap(out);
  }
};

}  // namespace

std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const JsonNode& n, int depth) {
  if (n.missing()) return nullptr;
  if (!n.is_object()) n.fail("must be an object or null");
  if (depth > kMaxSequenceDepth) n.fail("nests Sequence too deeply");
  const std::string type = n.req("type").str();
  const std::string where = n.file() + ": " + n.path();
  if (type == "Sequence") {
    auto seq = std::make_unique<SequencePre>();
    JsonNode list = n.req("pretokenizers");
    for (size_t i = 0; i < list.array_size(); ++i) {
      auto st = parse_pre_tokenizer(list.at(i), depth + 1);
      if (st) seq->steps.push_back(std::move(st));
    }
    return seq;
  }
  if (type == "Split") return std::make_unique<SplitPre>(n);
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPre>(n.bool_or("add_prefix_space", false), n.bool_or("use_regex", true), where);
  if (type == "Metaspace") {
    auto m = std::make_unique<MetaspacePre>();
    m->replacement = n.str_or("replacement", "\xE2\x96\x81");
    if (m->replacement.empty() || utf8_char_len(m->replacement, 0) != m->replacement.size())
      n.get("replacement").fail("must be a single character");
    JsonNode scheme = n.get("prepend_scheme");
    if (!scheme.missing()) {
      const std::string s = scheme.str();
      if (s == "always")
        m->prepend = MetaspacePre::Prepend::Always;
      else if (s == "first")
        m->prepend = MetaspacePre::Prepend::First;
      else if (s == "never")
        m->prepend = MetaspacePre::Prepend::Never;
      else
        scheme.fail("'" + s + "' is not supported (expected always, first or never)");
    } else {
      m->prepend = n.bool_or("add_prefix_space", true) ? MetaspacePre::Prepend::Always : MetaspacePre::Prepend::Never;
    }
    m->split = n.bool_or("split", true);
    return m;
  }
  if (type == "Digits") return std::make_unique<DigitsPre>(n.bool_or("individual_digits", false), where);
  n.get("type").fail("'" + type +
                     "' is not supported (expected Sequence, Split, ByteLevel, Metaspace or Digits)");
}

}  // namespace kvx::tok
