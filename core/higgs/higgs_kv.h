// HIGGS dequantization on the device (the CPU quantizer is core/higgs): grid lookup of bit-packed
// indices, per-group scale, inverse unnormalized Hadamard H_g(·)/g, cut to C. Attention over HIGGS
// codes is this dequantize followed by dense attention, the `dequant_then_attend` path. The way to a
// fused kernel: H_g is symmetric and H_g·H_g = g·I, so no per-token transform is needed. Per group
// j, q·k̂_j = s_j/g · (H_g q_j)·γ_idx, i.e. rotate each query once per step and score against grid
// points looked up from shared memory; Σ_t p_t·v̂_t = H_g(Σ_t p_t·s_t·γ_t)/g, i.e. accumulate in the
// rotated domain and transform the output once.
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
