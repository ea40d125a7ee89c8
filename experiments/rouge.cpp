#include "experiments/rouge.h"

#include <algorithm>

namespace kvx {

int64_t lcs_length(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  // Two rolling rows: O(|a|·|b|) time, O(|b|) memory.
  std::vector<int64_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

RougeL rouge_l(const std::vector<int32_t>& candidate, const std::vector<int32_t>& reference) {
  RougeL r;
  if (candidate.empty() && reference.empty()) return {1.0, 1.0, 1.0, 0};
  if (candidate.empty() || reference.empty()) return r;
  r.lcs = lcs_length(candidate, reference);
  r.precision = double(r.lcs) / double(candidate.size());
  r.recall = double(r.lcs) / double(reference.size());
  r.f1 = r.lcs == 0 ? 0.0 : 2 * r.precision * r.recall / (r.precision + r.recall);
  return r;
}

double token_agreement(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = std::max(a.size(), b.size());
  if (n == 0) return 1.0;
  size_t same = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) same += a[i] == b[i];
  return double(same) / double(n);
}

}  // namespace kvx
