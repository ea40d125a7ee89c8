#include "core/higgs/ridge.h"

#include <ATen/ATen.h>
#include <c10/util/StringUtil.h>

#include <cmath>

#include "core/common/error.h"

namespace kvx::higgs {

at::Tensor LinearMap::apply(const at::Tensor& x) const {
  auto w = weight.to(x.device()).to(x.scalar_type());
  auto b = bias.to(x.device()).to(x.scalar_type());
  return at::addmm(b, x, w.t());
}

RidgeAccumulator::RidgeAccumulator(int64_t in, int64_t out) : in_(in), out_(out) {
  M_ = at::zeros({in + 1, in + 1}, at::kDouble);
  XtY_ = at::zeros({in + 1, out}, at::kDouble);
}

void RidgeAccumulator::add(const at::Tensor& X, const at::Tensor& Y) {
  if (X.dim() != 2 || Y.dim() != 2 || X.size(0) != Y.size(0) || X.size(1) != in_ || Y.size(1) != out_)
    throw error("ridge fit: expected X [rows, {}] and Y [rows, {}], got {} and {}", in_, out_, c10::str(X.sizes()), c10::str(Y.sizes()));
  constexpr int64_t kChunk = 4096;
  for (int64_t r = 0; r < X.size(0); r += kChunk) {
    const int64_t n = std::min(kChunk, X.size(0) - r);
    auto x = X.narrow(0, r, n).to(at::kDouble).cpu();
    auto x1 = at::cat({x, at::ones({n, 1}, at::kDouble)}, 1);
    M_ += at::matmul(x1.t(), x1);
    XtY_ += at::matmul(x1.t(), Y.narrow(0, r, n).to(at::kDouble).cpu());
  }
  rows_ += X.size(0);
}

LinearMap RidgeAccumulator::solve(double percdamp) const {
  auto M = M_.clone();
  const double damp = percdamp * M.diagonal().abs().mean().item<double>();
  M.diagonal().add_(damp);
  auto W1 = at::matmul(at::linalg_pinv(M), XtY_);  // [in+1, out]
  LinearMap f;
  f.weight = W1.narrow(0, 0, in_).t().to(at::kFloat).contiguous();
  f.bias = W1.select(0, in_).to(at::kFloat).contiguous();
  return f;
}

LinearMap ridge_fit(const at::Tensor& X, const at::Tensor& Y, double percdamp) {
  RidgeAccumulator acc(X.size(1), Y.size(1));
  acc.add(X, Y);
  return acc.solve(percdamp);
}

double rel_mse(const at::Tensor& pred, const at::Tensor& Y) {
  auto p = pred.to(at::kDouble), y = Y.to(at::kDouble);
  return (p - y).pow(2).sum().item<double>() / y.pow(2).sum().item<double>();
}

double equivalent_bits(double r) { return -std::log(r) / std::log(4.0); }

}  // namespace kvx::higgs
