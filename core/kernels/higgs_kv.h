// HIGGS dequantization on the device (ALGORITHMS.md 2.6, the CPU quantizer is core/higgs): grid
// lookup of bit-packed indices, per-group scale, inverse unnormalized Hadamard H_g(·)/g, cut to C.
// Attention over HIGGS codes is this dequantize followed by the dense fused attention
// (packed_kv.h: cuda::decode_attention_dense), the `dequant_then_attend` path: the Hadamard
// transform mixes all g coordinates of a group, so a fused kernel would redo a g-point transform
// per token and per query head instead of once per token. Measured on H100 (kernel_bench,
// llama3-8b B8 32K, d2n256 g128): 3.6 ms per layer for K+V dequantize + attention against 0.47 ms
// for bf16 SDPA; a faster index unpack (shared-memory staged bytes) is the obvious next step.
//
// The view carries core/higgs's HiggsCodes fields with the indices on the device too (HiggsCodes
// keeps them on the host); the CPU reference is core/higgs's dequantization:
//   packed  uint8 [ceil(rows·m·v·bits/8)]: index i at stream bits [i·bits, i·bits + bits),
//           LSB-first, in (row, group, vector) order (core/higgs/index_packing.h)
//   scales  fp16 [rows, m] (m = ceil(C/g) groups; v = ceil(g/d) vectors per group)
//   points  fp32 [n, d], n = 2^bits
// g is the effective group size (a power of two, at most 1024 on CUDA).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kvx::kernels {

struct HiggsView {
  at::Tensor packed, scales, points;
  int64_t rows = 0, C = 0, g = 0;
  int d = 0, bits = 0;
};

// [rows, C] in `dtype` on the device of `scales` (CUDA kernel there when built with it).
at::Tensor higgs_dequantize(const HiggsView& h, at::ScalarType dtype);

namespace ref {
at::Tensor higgs_dequantize(const HiggsView& h, at::ScalarType dtype);  // CPU, [rows, C]: core/higgs
}  // namespace ref

#ifdef KVX_WITH_CUDA
namespace cuda {
at::Tensor higgs_dequantize(const HiggsView& h, at::ScalarType dtype);
}  // namespace cuda
#endif

}  // namespace kvx::kernels
