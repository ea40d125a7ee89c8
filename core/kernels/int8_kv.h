// Fused attention over the selective-int8 cache layout (docs/methods/selective_int8.md): per layer
// and (batch, KV head)
//     [ sinks: fp16/bf16 | body: int8 absmax per token + fp32 scale | recent window: fp16/bf16 ]
// The kernel reads the int8 codes in place and covers sinks, body and window (with the queries' own
// tokens at the window's end, causal) in one split-K launch on the tensor cores, followed by the
// log-sum-exp merge of packed_kv.h's kernels. The body is core/cache's int8 absmax storage:
// x̂ = code·scale in fp32.
// int8_attention has a plain CPU reference (int8_kv_ref.cpp); tensors on CUDA take the CUDA kernel
// (int8_kv_cuda.cu) when kvx was built with it, otherwise a clear error.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>

#include "core/kernels/packed_kv.h"

namespace kvx::kernels {

// An int8 body: codes int8 [B, H, N, D] (rows contiguous; a token range of a larger buffer is
// fine) and scales fp32 [B, H, N] (the token axis contiguous).
// A body that grows in a graph-replayed run says so in `grow` (packed_kv.h's StepGrowth).
struct Int8Rows {
  Int8Rows() = default;
  Int8Rows(at::Tensor c, at::Tensor s, StepGrowth g = {}) : codes(std::move(c)), scale(std::move(s)), grow(g) {}
  at::Tensor codes, scale;
  StepGrowth grow;
  int64_t tokens() const { return codes.defined() ? codes.size(2) : 0; }
  int64_t max_tokens() const { return grow.max_tokens(tokens()); }
  Int8Rows at_step() const { return grow.step ? Int8Rows{kernels::at_step(codes, grow), kernels::at_step(scale, grow)} : *this; }
};

// As packed_attention (packed_kv.h) with an int8 body (k, v may be nullptr or empty). Returns
// [B, Hq, n, D] fp32.
at::Tensor int8_attention(const at::Tensor& q, const Int8Rows* k, const Int8Rows* v, const FpSegment& sink,
                          const FpSegment& tail, double scale);
// Why the fused CUDA kernel cannot take this shape ("" when it can).
std::string int8_attention_unsupported(int64_t head_dim);

namespace ref {
at::Tensor int8_dequantize(const Int8Rows& r);  // [B, H, N, D] fp32 on the CPU
at::Tensor int8_attention(const at::Tensor& q, const Int8Rows* k, const Int8Rows* v, const FpSegment& sink,
                          const FpSegment& tail, double scale);
}  // namespace ref

#ifdef KVX_WITH_CUDA
namespace cuda {
at::Tensor int8_attention(const at::Tensor& q, const Int8Rows* k, const Int8Rows* v, const FpSegment& sink,
                          const FpSegment& tail, double scale);
}  // namespace cuda
#endif

}  // namespace kvx::kernels
