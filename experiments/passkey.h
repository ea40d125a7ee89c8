// passkey protocol (needle retrieval): a random number hidden at a chosen depth of filler text
// of a chosen length, then a question; accuracy of greedy retrieval. One job is one cell of the
// depth × length grid (list both in the sweep config; `kvx report` pivots protocol.depth ×
// protocol.length into the heatmap).
//
// The prompt is assembled in token space so that lengths and depths are exact:
//   [BOS + intro] [filler ...] [needle head][key][needle tail] [... filler] [question]
// where the filler is one digit-free sentence repeated (cut at any token), depth d% puts
// round(d/100 · F) filler tokens before the needle (F = filler tokens in the prompt), and the
// whole prompt is exactly `length` tokens. The key appears exactly once.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "experiments/protocol.h"

namespace kvx {

class Tokenizer;

struct PasskeyPrompt {
  std::vector<int32_t> ids;      // exactly `length` tokens
  std::vector<int32_t> key_ids;  // the key's tokens as they appear in ids
  int64_t needle_pos = 0;        // index of the needle's first token
  int64_t key_pos = 0;           // index of the key's first token
  int64_t filler_tokens = 0;     // F
};

// Throws kvx::Error when length cannot hold intro, needle and question.
PasskeyPrompt build_passkey_prompt(const Tokenizer& tok, int64_t length, double depth_percent, const std::string& key);
// The key of trial t (digits long, leading digit non-zero), from a seeded generator.
std::string passkey_key(uint64_t seed, int64_t trial, int digits);
// The answer is right when the first run of digits in the generated text equals the key.
bool passkey_correct(const std::string& generated, const std::string& key);

ProtocolTraits passkey_protocol();
nlohmann::json run_passkey(const nlohmann::json& job, JobContext& ctx);

}  // namespace kvx
