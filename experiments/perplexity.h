// The perplexity protocol (docs/methods/protocols.md, "perplexity"): the dataset text is tokenized
// once (whole file as one string, no BOS), cut into windows of seq_len tokens every `stride`
// tokens (0 = seq_len: non-overlapping; a last partial window is dropped), and each window is
// fed from a fresh cache policy in chunks of `chunk` tokens (1 = exact token-by-token decoding).
// A token at window position p is scored when p >= 1 (it has context), p >= warmup, and, for
// overlapping windows, it was not scored by the previous window. NLL is summed in fp64.
// With the defaults this is exactly reference.json's wikitext2_test_ppl_window512_nonoverlap.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "experiments/protocol.h"

namespace kvx {

class CausalLM;

struct PerplexityOptions {
  int64_t seq_len = 512;
  int64_t stride = 0;       // 0 = window length in text tokens (non-overlapping)
  int64_t chunk = 32;
  int64_t warmup = 0;
  int64_t max_windows = 0;  // 0 = all
  bool add_bos = false;     // window = [BOS] + seq_len-1 text tokens
  bool profile = false;     // prof_* metrics (experiments/timed_policy.h)
  int64_t batch = 1;        // windows per forward (methods that cannot batch run at 1)
  int32_t bos_id = -1;
};

// Perplexity of `ids` under `model` with a fresh policy per window built from the resolved
// method spec. ctx may be null (no progress, no cancel). Returns the metrics object (ppl, nll,
// tokens_scored, windows, tokens_per_s, eval_seconds, attention_impl, kernel_path, kv_bytes,
// kv_bytes_max, bpv, compression_ratio, retained_fraction, offload_bytes, side_bytes).
nlohmann::json perplexity_over_tokens(CausalLM& model, const std::vector<int32_t>& ids, const PerplexityOptions& opt,
                                      const nlohmann::json& resolved_method, JobContext* ctx);

// The protocol row for protocol.cpp's table.
ProtocolTraits perplexity_protocol();

}  // namespace kvx
