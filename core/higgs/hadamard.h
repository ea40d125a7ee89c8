// Walsh–Hadamard transform (docs/methods/aqua_kv.md, "HIGGS quantizer"): the unnormalized
// Sylvester matrix H_g[i][j] = (-1)^popcount(i & j), so H_g·H_g = g·I; the inverse is H_g(y)/g.
// The CPU path is an in-place butterfly on fp32 rows; the tensor path works on any device
// (CUDA included) with log2(g) stride-split steps of ATen ops, so no separate kernel is needed
// for correctness. Both give identical results on CPU for fp32 (same additions, same order).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kvx::higgs {

inline bool is_pow2(int64_t g) { return g > 0 && (g & (g - 1)) == 0; }
inline int64_t next_pow2(int64_t x) {
  int64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

// y = H_g x for each of `rows` contiguous rows of length g, in place (g a power of two).
void fwht_rows(float* x, int64_t rows, int64_t g);

// H_g applied to the last dimension of x (its size must be a power of two). Returns fp32.
// With inverse=true returns H_g(x)/g.
at::Tensor fwht(const at::Tensor& x, bool inverse = false);

}  // namespace kvx::higgs
