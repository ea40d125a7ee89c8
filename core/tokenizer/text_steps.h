// The string stages of a tokenizer.json pipeline, each parsed from its JSON object:
//   normalizer    (text -> text):            Sequence, Prepend, Replace, Strip, NFC*
//   pre_tokenizer (pieces -> finer pieces):  Sequence, ByteLevel, Split, Metaspace, Digits
//   decoder       (token strings -> text):   Sequence, ByteLevel, Replace, ByteFallback, Fuse,
//                                            Strip, Metaspace
// Semantics follow Hugging Face `tokenizers`. Any other "type" is a kvx::Error naming the
// file and key. (*) NFC is accepted as identity: kvx feeds it NFC text already (WikiText,
// source code); text with combining sequences may tokenize differently from HF.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/tokenizer/json_node.h"

namespace kvx::tok {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void apply(std::string& s) const = 0;
};

// Pieces of one added-token-free segment; first_at_start: pieces[0] begins the whole input
// (Metaspace's prepend_scheme "first" needs it).
struct Pieces {
  std::vector<std::string> items;
  bool first_at_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void apply(Pieces& p) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};

// A missing (null) node yields nullptr: the stage is skipped.
std::unique_ptr<Normalizer> parse_normalizer(const JsonNode& n, int depth = 0);
std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const JsonNode& n, int depth = 0);
std::unique_ptr<Decoder> parse_decoder(const JsonNode& n, int depth = 0);

// Nesting limit for Sequence stages in hostile files.
constexpr int kMaxSequenceDepth = 8;

}  // namespace kvx::tok
