// Closed-form ridge regression with intercept, the AQUA-KV predictor fit (docs/methods/aqua_kv.md,
// "Calibration"): X₁ = [X, 1], M = X₁ᵀX₁, M_ii += percdamp · mean_k |M_kk| for EVERY diagonal
// entry (the intercept's included), W₁ = pinv(M)·X₁ᵀY; weight = first rows of W₁ transposed to [out, in],
// bias = last row. Sums are accumulated over row chunks in fp64 (upstream: fp32; fp64 only
// removes round-off) and solved in fp64; results come back fp32.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kvx::higgs {

struct LinearMap {
  at::Tensor weight;  // [out, in] fp32
  at::Tensor bias;    // [out] fp32
  at::Tensor apply(const at::Tensor& x) const;  // x [rows, in] -> [rows, out] in x's dtype
};

class RidgeAccumulator {
 public:
  RidgeAccumulator(int64_t in, int64_t out);
  void add(const at::Tensor& X, const at::Tensor& Y);  // [rows, in], [rows, out]
  LinearMap solve(double percdamp) const;
  int64_t rows() const { return rows_; }

 private:
  int64_t in_, out_, rows_ = 0;
  at::Tensor M_, XtY_;  // fp64 [in+1, in+1], [in+1, out]
};

LinearMap ridge_fit(const at::Tensor& X, const at::Tensor& Y, double percdamp);

// ‖f(X) − Y‖² / ‖Y‖² and its "equivalent bits" −log₄(relMSE).
double rel_mse(const at::Tensor& pred, const at::Tensor& Y);
double equivalent_bits(double rel_mse);

}  // namespace kvx::higgs
