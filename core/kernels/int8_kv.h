// Kernels over the selective-int8 cache layout (ALGORITHMS.md 6.3, policy quantizers/selective_int8):
// per layer and (batch, KV head)
//     [ sinks: fp16/bf16 | body: int8 absmax per token + fp32 scale | recent window: fp16/bf16 ]
// fused decode attention that reads the int8 codes and covers sinks, body and window in one
// split-K launch on the tensor cores, followed by the log-sum-exp merge of packed_kv.h's kernels.
//
// The body is core/cache/int8_absmax.h's Int8Block (codes int8 [B, H, N, D], scale fp32
// [B, H, N]), so a policy's storage is handed over without copies; quantize-on-append is that
// codec's int8_quantize (a CUDA kernel for CUDA tensors, core/cache/codec_cuda.h).
// int8_decode_attention has a plain CPU reference (int8_kv_ref.cpp); tensors on CUDA take the
// CUDA kernels (int8_kv_cuda.cu) when kvx was built with them, otherwise a clear error.
#pragma once
#include <ATen/core/Tensor.h>

#include "core/cache/int8_absmax.h"

namespace kvx::kernels {

// One layer's selective-int8 cache. Undefined or zero-length segments are allowed (T <= S + W:
// no body; S = 0: no sinks), but not all three empty. Sinks and window share one dtype
// (float16 or bfloat16 on CUDA; any floating dtype on CPU).
struct SelectiveInt8Cache {
  at::Tensor k_sink, v_sink;  // [B, Hkv, S, D]
  Int8Block k_body, v_body;   // [B, Hkv, N, D]
  at::Tensor k_win, v_win;    // [B, Hkv, W, D]
  int64_t bytes() const;
};

// One decode step for every query head: q [B, Hq, D], Hq a multiple of Hkv (GQA: query head h
// uses KV head h / (Hq/Hkv)); attends over sinks, body and window. Returns [B, Hq, D] fp32.
// On CUDA this is the fused kernel (D = 128, GQA ratio <= 8); on CPU the
// reference (dequantize, then attend). The path taken is packed_kv.h's decode_attention_path.
at::Tensor int8_decode_attention(const at::Tensor& q, const SelectiveInt8Cache& c, double scale);

namespace ref {
at::Tensor int8_decode_attention(const at::Tensor& q, const SelectiveInt8Cache& c, double scale);
}  // namespace ref

#ifdef KVX_WITH_CUDA
namespace cuda {
at::Tensor int8_decode_attention(const at::Tensor& q, const SelectiveInt8Cache& c, double scale);
}  // namespace cuda
#endif

}  // namespace kvx::kernels
