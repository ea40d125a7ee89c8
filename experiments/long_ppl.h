// long_ppl protocol: long-document perplexity by position. Each document (a seq_len slice of
// the dataset's token stream, or one JSONL record, at most seq_len tokens) gets a fresh cache and
// is fed in chunks, so the cache grows to the document's full length; the prediction of token p
// (p >= 1) is scored in position bucket floor(p / bucket). Metrics: ppl over all scored tokens,
// one ppl_<from>_<to> per bucket (e.g. ppl_0_1k, ppl_1k_2k for bucket 1024; raw token counts when
// the bucket is not a multiple of 1024), tokens_<from>_<to>, and "buckets": an array of
// {from, to, tokens, ppl}; plus KV memory. Comparing methods bucket by bucket shows where a
// method starts to hurt.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "experiments/protocol.h"

namespace kvx {

// Per-bucket sums of negative log-likelihood.
class BucketedNll {
 public:
  explicit BucketedNll(int64_t bucket);
  void add(int64_t position, double nll);  // position of the predicted token (>= 1)
  // Flat metrics (ppl, ppl_<a>_<b>, tokens_<a>_<b>, buckets); throws kvx::Error on NaN/Inf.
  void write(nlohmann::json& metrics) const;
  // "0_1k", "1k_2k" (bucket multiple of 1024) or "0_500", "500_1000".
  static std::string label(int64_t from, int64_t to, int64_t bucket);

 private:
  int64_t bucket_;
  std::vector<double> nll_;
  std::vector<int64_t> count_;
};

ProtocolTraits long_ppl_protocol();
nlohmann::json run_long_ppl(const nlohmann::json& job, JobContext& ctx);

}  // namespace kvx
