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
  std::vector<int32_t> encode(const std::string& text, bool add_special = true) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  int32_t bos_id() const;  // -1 when the tokenizer has none
  int32_t eos_id() const;  // -1 when unknown
  int64_t vocab_size() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvx
