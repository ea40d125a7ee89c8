// CUDA paths of the cache codecs (affine_quantizer.h, int8_absmax.h), internal to core/cache:
// affine_quantize / affine_dequantize / int8_quantize call these for CUDA tensors, so a policy's
// storage stays on the GPU (no host round trip per chunk). The CPU code in those files defines
// the numbers; these produce the same bytes, metadata and dequantized values (same fp32
// operations in the same order, no contraction into FMAs), checked by tests/cache/test_codec_cuda.
#pragma once
#ifdef KVX_WITH_CUDA
#include "core/cache/affine_quantizer.h"
#include "core/cache/int8_absmax.h"

namespace kvx::cuda_codec {

// blk arrives with bits, group, axis and B, H, N, D set; this fills codes, scale and shift.
void affine_quantize(const at::Tensor& x, at::ScalarType meta_dtype, AffineBlock& blk);
at::Tensor affine_dequantize(const AffineBlock& blk, at::ScalarType dtype);
// Needs D a multiple of 32, at most 1024 (one thread per channel); int8_quantize falls back to
// the CPU code otherwise.
bool int8_supported(const at::Tensor& x);
Int8Block int8_quantize(const at::Tensor& x);
// Into dst's tensors ([B, H, n, D] / [B, H, n]: rows contiguous, (b, h) planes at one stride).
// moved: a graph-replayed step's (int8_absmax.h), x then a view of rows of a buffer.
void int8_quantize_into(const at::Tensor& x, Int8Block& dst, const kernels::StepGrowth& moved);

}  // namespace kvx::cuda_codec
#endif
