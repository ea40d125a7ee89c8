// Rotary position embeddings with Llama's rotate_half pairing (channel k pairs with k + D/2),
// matching transformers: angles = pos * inv_freq in fp32, cos/sin cast to the input dtype.
// apply(..., inverse=true) rotates by -angle, so apply(apply(x, p), p, true) == x; quantizers
// use the inverse to work on pre-RoPE keys (docs/methods/aqua_kv.md).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "core/model/model_config.h"

namespace kvx {

// Inverse frequencies [D/2] (fp64 on CPU, then stored fp32) after default / linear / llama3 scaling.
at::Tensor rope_inv_freq(int64_t head_dim, const RopeConfig& cfg);

class Rope {
 public:
  // Tables cover positions [0, table_positions); later positions are computed on demand.
  Rope(int64_t head_dim, const RopeConfig& cfg, int64_t table_positions, at::Device device);

  int64_t head_dim() const { return head_dim_; }
  const at::Tensor& inv_freq() const { return inv_freq_; }  // [D/2] fp32 on the model device

  // cos and sin [T, D] fp32 for the given int64 positions [T].
  std::pair<at::Tensor, at::Tensor> cos_sin(const at::Tensor& positions) const;
  // x [..., T, D]; positions int64 [T] (absolute). Returns a new tensor in x's dtype.
  at::Tensor apply(const at::Tensor& x, const at::Tensor& positions, bool inverse = false) const;
  // Same for a contiguous range [pos0, pos0 + T) known on the host: uses the tables, no sync.
  at::Tensor apply_range(const at::Tensor& x, int64_t pos0, bool inverse = false) const;
  // The tables: cos and sin [table_positions, D] fp32 on the model device.
  const at::Tensor& cos_table() const { return cos_; }
  const at::Tensor& sin_table() const { return sin_; }
  int64_t table_positions() const { return cos_.size(0); }

 private:
  at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool inverse) const;
  int64_t head_dim_;
  at::Tensor inv_freq_;  // [D/2] fp32
  at::Tensor cos_, sin_; // [P, D] fp32
};

}  // namespace kvx
