#include "core/model/rope.h"

#include <ATen/ATen.h>

#include <cmath>

#include "core/common/error.h"

namespace kvx {

at::Tensor rope_inv_freq(int64_t head_dim, const RopeConfig& cfg) {
  // transformers: 1 / theta^(arange(0, D, 2) / D), computed in fp32.
  auto idx = at::arange(0, head_dim, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat);
  at::Tensor inv = 1.0 / at::pow(cfg.theta, idx / double(head_dim));
  if (cfg.type == "default") return inv;
  if (cfg.type == "linear") return inv / cfg.factor;
  if (cfg.type == "llama3") {
    // transformers' _compute_llama3_parameters: low frequencies divided by factor, high kept,
    // the band between interpolated smoothly.
    const double old_ctx = double(cfg.original_max_positions);
    const double low_wavelen = old_ctx / cfg.low_freq_factor;
    const double high_wavelen = old_ctx / cfg.high_freq_factor;
    at::Tensor wavelen = 2 * M_PI / inv;
    at::Tensor scaled = at::where(wavelen > low_wavelen, inv / cfg.factor, inv);
    at::Tensor smooth = (old_ctx / wavelen - cfg.low_freq_factor) / (cfg.high_freq_factor - cfg.low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * scaled / cfg.factor + smooth * scaled;
    at::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    return at::where(medium, smoothed, scaled);
  }
  throw error("rope_type '{}' is not supported (expected default, linear or llama3)", cfg.type);
}

Rope::Rope(int64_t head_dim, const RopeConfig& cfg, int64_t table_positions, at::Device device)
    : head_dim_(head_dim) {
  if (head_dim <= 0 || head_dim % 2) throw error("RoPE needs an even head_dim, got {}", head_dim);
  inv_freq_ = rope_inv_freq(head_dim, cfg).to(device);
  auto pos = at::arange(std::max<int64_t>(table_positions, 1), at::TensorOptions().dtype(at::kLong).device(device));
  std::tie(cos_, sin_) = cos_sin(pos);
}

std::pair<at::Tensor, at::Tensor> Rope::cos_sin(const at::Tensor& positions) const {
  at::Tensor freqs = positions.to(inv_freq_.device()).to(at::kFloat).unsqueeze(1) * inv_freq_.unsqueeze(0);
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

at::Tensor Rope::rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool inverse) const {
  if (x.size(-1) != head_dim_)
    throw error("Rope::apply: last dimension is {}, expected head_dim {}", x.size(-1), head_dim_);
  const int64_t half = head_dim_ / 2;
  at::Tensor c = cos.to(x.scalar_type()), s = sin.to(x.scalar_type());
  at::Tensor rot = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);  // rotate_half
  return inverse ? x * c - rot * s : x * c + rot * s;
}

at::Tensor Rope::apply(const at::Tensor& x, const at::Tensor& positions, bool inverse) const {
  if (positions.dim() != 1 || positions.size(0) != x.size(-2))
    throw error("Rope::apply: positions must be [T] with T = {}", x.size(-2));
  auto cs = cos_sin(positions);
  return rotate(x, cs.first, cs.second, inverse);
}

at::Tensor Rope::apply_range(const at::Tensor& x, int64_t pos0, bool inverse) const {
  const int64_t T = x.size(-2);
  if (pos0 >= 0 && pos0 + T <= cos_.size(0))
    return rotate(x, cos_.narrow(0, pos0, T), sin_.narrow(0, pos0, T), inverse);
  auto pos = at::arange(pos0, pos0 + T, at::TensorOptions().dtype(at::kLong).device(inv_freq_.device()));
  return apply(x, pos, inverse);
}

}  // namespace kvx
