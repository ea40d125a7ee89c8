// Decoders (see text_steps.h). Each maps the list of token strings to a new list; the
// tokenizer concatenates the final list.
#include "core/tokenizer/pattern.h"
#include "core/tokenizer/text_steps.h"
#include "core/tokenizer/unicode.h"

namespace kvx::tok {
namespace {

class SequenceDec : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> steps;
  void apply(std::vector<std::string>& t) const override {
    for (const auto& st : steps) st->apply(t);
  }
};

// Byte-level: each character stands for one byte; a token with any character outside the
// alphabet contributes its own UTF-8 bytes (HF). Ill-formed results become U+FFFD.
class ByteLevelDec : public Decoder {
 public:
  void apply(std::vector<std::string>& t) const override {
    std::string bytes;
    for (const auto& tok : t) {
      const size_t start = bytes.size();
      bool ok = true;
      for (size_t i = 0; i < tok.size() && ok;) {
        const int b = unicode_to_byte(utf8_next(tok, i));
        if (b < 0)
          ok = false;
        else
          bytes += static_cast<char>(b);
      }
      if (!ok) {
        bytes.resize(start);
        bytes += tok;
      }
    }
    t.assign(1, utf8_lossy(bytes));
  }
};

class ReplaceDec : public Decoder {
 public:
  explicit ReplaceDec(const JsonNode& n) : pattern(n.req("pattern")), content(n.req("content").str()) {}
  Pattern pattern;
  std::string content;
  void apply(std::vector<std::string>& t) const override {
    for (auto& s : t) s = pattern.replace_all(s, content);
  }
};

// Runs of <0xNN> tokens become their bytes when those form valid UTF-8, else one U+FFFD
// per byte (HF ByteFallback).
class ByteFallbackDec : public Decoder {
 public:
  static int byte_of(const std::string& s) {
    if (s.size() != 6 || s.compare(0, 3, "<0x") != 0 || s[5] != '>') return -1;
    auto hex = [](char c) {
      return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    };
    const int hi = hex(s[3]), lo = hex(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
  void apply(std::vector<std::string>& t) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (utf8_invalid_offset(pending) == std::string::npos)
        out.push_back(pending);
      else
        for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      pending.clear();
    };
    for (auto& s : t) {
      const int b = byte_of(s);
      if (b >= 0) {
        pending += static_cast<char>(b);
      } else {
        flush();
        out.push_back(std::move(s));
      }
    }
    flush();
    t.swap(out);
  }
};

class FuseDec : public Decoder {
 public:
  void apply(std::vector<std::string>& t) const override {
    std::string all;
    for (const auto& s : t) all += s;
    t.assign(1, std::move(all));
  }
};

class StripDec : public Decoder {
 public:
  std::string content;  // one character
  size_t start = 0, stop = 0;
  void apply(std::vector<std::string>& t) const override {
    for (auto& s : t) {
      size_t b = 0, e = s.size();
      for (size_t k = 0; k < start && e - b >= content.size() && s.compare(b, content.size(), content) == 0; ++k)
        b += content.size();
      for (size_t k = 0; k < stop && e - b >= content.size() && s.compare(e - content.size(), content.size(), content) == 0; ++k)
        e -= content.size();
      s = s.substr(b, e - b);
    }
  }
};

class MetaspaceDec : public Decoder {
 public:
  std::string replacement;
  bool strip_first_space = true;
  void apply(std::vector<std::string>& t) const override {
    for (size_t i = 0; i < t.size(); ++i) {
      std::string s;
      // As HF: in the first token every replacement character is dropped, not turned into a space.
      const bool drop = i == 0 && strip_first_space;
      for (size_t p = 0; p < t[i].size();) {
        if (t[i].compare(p, replacement.size(), replacement) == 0) {
          if (!drop) s += ' ';
          p += replacement.size();
        } else {
          s += t[i][p++];
        }
      }
      t[i].swap(s);
    }
  }
};

std::string one_char(const JsonNode& n) {
  std::string s = n.str();
  if (s.empty() || utf8_char_len(s, 0) != s.size()) n.fail("must be a single character");
  return s;
}

size_t count(const JsonNode& n, const std::string& key) {
  const int64_t v = n.int_or(key, 0);
  if (v < 0 || v > 1 << 20) n.get(key).fail("must be a small non-negative integer");
  return static_cast<size_t>(v);
}

}  // namespace

std::unique_ptr<Decoder> parse_decoder(const JsonNode& n, int depth) {
  if (n.missing()) return nullptr;
  if (!n.is_object()) n.fail("must be an object or null");
  if (depth > kMaxSequenceDepth) n.fail("nests Sequence too deeply");
  const std::string type = n.req("type").str();
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceDec>();
    JsonNode list = n.req("decoders");
    for (size_t i = 0; i < list.array_size(); ++i) {
      auto st = parse_decoder(list.at(i), depth + 1);
      if (st) seq->steps.push_back(std::move(st));
    }
    return seq;
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDec>();
  if (type == "Replace") return std::make_unique<ReplaceDec>(n);
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDec>();
  if (type == "Fuse") return std::make_unique<FuseDec>();
  if (type == "Strip") {
    auto d = std::make_unique<StripDec>();
    d->content = one_char(n.req("content"));
    d->start = count(n, "start");
    d->stop = count(n, "stop");
    return d;
  }
  if (type == "Metaspace") {
    auto d = std::make_unique<MetaspaceDec>();
    JsonNode rep = n.get("replacement");
    d->replacement = rep.missing() ? std::string("\xE2\x96\x81") : one_char(rep);
    JsonNode scheme = n.get("prepend_scheme");
    d->strip_first_space = scheme.missing() ? n.bool_or("add_prefix_space", true) : scheme.str() != "never";
    return d;
  }
  n.get("type").fail("'" + type +
                     "' is not supported (expected Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip or Metaspace)");
}

}  // namespace kvx::tok
