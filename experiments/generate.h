// Autoregressive continuation through a cache policy: the prompt is one prefill chunk, then one
// token per forward call. Greedy (temperature 0, ties to the lowest id, as torch.argmax) or
// temperature / top-k sampling with a seeded generator, so runs are reproducible.
#pragma once
#include <cstdint>
#include <vector>

namespace kvx {

class CausalLM;
class KVCachePolicy;

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  double temperature = 0;  // <= 0: greedy
  int64_t top_k = 0;       // 0: whole vocabulary
  uint64_t seed = 0;
  int32_t stop_id = -1;    // generation stops after emitting this id; -1: never
};

// Wall time of the prompt's forward call and of the one-token calls (sampling included).
struct GenerateTimes {
  double prefill_s = 0, decode_s = 0;
  int64_t decode_steps = 0;
};

// Resets `policy`, feeds `prompt` (non-empty) and returns the new tokens only.
std::vector<int32_t> generate_continuation(CausalLM& model, KVCachePolicy& policy, const std::vector<int32_t>& prompt,
                                           const GenerateOptions& opt, GenerateTimes* times = nullptr);

}  // namespace kvx
