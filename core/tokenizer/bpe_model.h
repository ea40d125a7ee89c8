// The BPE model of a tokenizer.json ("model": {"type": "BPE", ...}): vocabulary, merge
// ranks, byte fallback (<0xNN> tokens), unk, ignore_merges. encode_word turns one
// pre-token into ids by applying the lowest-ranked merge first (leftmost on ties), in
// O(n log n) with a heap, and caches results per word (guarded by a mutex, so one model
// may serve several threads).
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tokenizer/json_node.h"

namespace kvx::tok {

class BpeModel {
 public:
  explicit BpeModel(const JsonNode& model);  // throws kvx::Error naming model.<key>

  void encode_word(const std::string& word, std::vector<int32_t>& out) const;
  int32_t token_to_id(const std::string& token) const;  // -1 when absent
  const std::string* id_to_token(int32_t id) const;     // nullptr when absent
  int64_t max_id() const { return max_id_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  std::vector<int32_t> bpe(const std::string& word) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<int32_t, std::string> id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;
  int32_t byte_ids_[256];  // <0xNN> ids when byte_fallback, else -1
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::string prefix_;  // continuing_subword_prefix
  std::string suffix_;  // end_of_word_suffix
  int64_t max_id_ = -1;

  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace kvx::tok
