// Hugging Face tokenizer.json: byte-level BPE (GPT-2 / Llama-3 / Qwen2 pre-tokenizer regexes,
// split with PCRE2) and SentencePiece-style BPE with byte fallback (Llama-2 / Mistral), with
// added/special tokens and the post-processor's BOS. Loading validates the file and throws
// kvx::Error naming the file and the offending key.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kvx {

class Tokenizer {
 public:
  static Tokenizer load(const std::string& tokenizer_json_path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // add_special: apply the post-processor (e.g. prepend BOS), as transformers' default.
  // text must be valid UTF-8 (kvx::Error otherwise). Thread-safe.
  std::vector<int32_t> encode(const std::string& text, bool add_special = true) const;
  // Ids not in the vocabulary are skipped, as Hugging Face does (models may pad their
  // embedding past the tokenizer's vocabulary).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  // BOS: the special token the post-processor puts first (what encode(add_special) prepends);
  // when it prepends nothing, tokenizer_config.json's bos_token next to tokenizer.json; -1
  // when neither exists. adds_bos() says whether encode(text, true) starts with it.
  int32_t bos_id() const;
  // EOS: tokenizer_config.json's eos_token, else the first of </s>, <|end_of_text|>,
  // <|endoftext|>, <|im_end|> present; -1 when unknown.
  int32_t eos_id() const;
  bool adds_bos() const;
  int64_t vocab_size() const;  // largest id of the vocabulary and added tokens, plus one

  int32_t token_to_id(const std::string& token) const;  // -1 when absent
  std::string id_to_token(int32_t id) const;            // raw token string; "" when absent

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvx
