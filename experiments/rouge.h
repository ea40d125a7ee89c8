// ROUGE-L over token sequences (Lin, 2004): LCS-based precision, recall and F1 (beta = 1),
// and positional token agreement. Used by the generation protocol to compare a compressed
// cache's continuation with the full-precision one or with references.
#pragma once
#include <cstdint>
#include <vector>

namespace kvx {

struct RougeL {
  double precision = 0, recall = 0, f1 = 0;
  int64_t lcs = 0;
};

int64_t lcs_length(const std::vector<int32_t>& a, const std::vector<int32_t>& b);
// candidate vs reference; both empty -> all 1.0, one empty -> all 0.0.
RougeL rouge_l(const std::vector<int32_t>& candidate, const std::vector<int32_t>& reference);
// Fraction of positions i < max(len) where both sequences have the same token.
double token_agreement(const std::vector<int32_t>& a, const std::vector<int32_t>& b);

}  // namespace kvx
