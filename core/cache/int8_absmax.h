// Symmetric absmax int8 quantization per (batch, head, token) vector (docs/methods/selective_int8.md):
//   a = max(max_i |x_i|, 1e-8), s = a/127 (fp32, stored), q = clamp(nearbyint(x/s), -127, 127),
//   x̂ = q·s computed in fp32 and cast to the compute dtype.
#pragma once
#include <ATen/core/Tensor.h>

#include "core/kernels/packed_kv.h"

namespace kvx {

struct Int8Block {
  at::Tensor codes;  // int8 [B, H, N, D]
  at::Tensor scale;  // fp32 [B, H, N]
  int64_t tokens() const { return codes.defined() ? codes.size(2) : 0; }
  int64_t code_bits() const { return codes.defined() ? codes.numel() * 8 : 0; }
  int64_t scale_bits() const { return scale.defined() ? scale.numel() * 32 : 0; }
};

Int8Block int8_quantize(const at::Tensor& x);                        // x: [B, H, N, D]
// The same into dst's tensors (views, e.g. a token range of a store's buffers). `moved`: a
// graph-replayed step's (core/kernels/packed_kv.h's StepGrowth): x (a view of rows of a buffer) and
// dst both lie off_rate·d tokens further along their buffers at the counter's value d.
void int8_quantize_into(const at::Tensor& x, Int8Block& dst, const kernels::StepGrowth& moved = {});
at::Tensor int8_dequantize(const Int8Block& blk, at::ScalarType dtype);  // [B, H, N, D]

}  // namespace kvx
