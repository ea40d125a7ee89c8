// HIGGS quantizer Q / Deq of token rows (docs/methods/aqua_kv.md, "HIGGS quantizer") with real
// storage: bit-packed grid indices (log2(n) bits each, core/higgs/index_packing.h) and fp16
// per-group scales.
//
// For a row x ∈ R^C: pad to C' = ceil(C/g)·g with zeros; per group j of g coordinates,
// s_j = ‖x_j‖₂ (fp32), u_j = H_g x_j / s_j (u_j = 0 when s_j = 0), pad u_j to a multiple of d,
// index each d-vector by its nearest grid point. Deq: γ_idx, cut to g, ·s_j (the stored fp16
// value), H_g(·)/g, cut to C. The effective group is g_eff = min(g, next_pow2(C)) (a kvx
// resolution), so small models do not pay for codes of a 1024-wide zero pad.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "core/higgs/grid.h"

namespace kvx::higgs {

int64_t g_eff(int64_t g, int64_t C);

struct HiggsCodes {
  int64_t rows = 0, C = 0;
  int64_t g = 0;         // effective group size
  int d = 0, n = 0, bits = 0;
  at::Tensor packed;     // uint8 [ceil(rows·m·v·bits/8)] CPU: indices in (row, group, vector) order
  at::Tensor scales;     // fp16 [rows, m] on the input's device
  int64_t groups() const { return (C + g - 1) / g; }           // m
  int64_t vectors_per_group() const { return (g + d - 1) / d; } // v
  int64_t codes() const { return rows * groups() * vectors_per_group(); }
  int64_t padded_values() const { return rows * groups() * g; }
  int64_t code_bits() const { return packed.defined() ? packed.numel() * 8 : 0; }
  int64_t scale_bits() const { return scales.defined() ? scales.numel() * 16 : 0; }
};

// x: [rows, C] floating (any device). g: configured Hadamard group size (a power of two).
HiggsCodes higgs_quantize(const at::Tensor& x, const Grid& grid, int64_t g);
// [rows, C] in dtype on `device`.
at::Tensor higgs_dequantize(const HiggsCodes& c, const Grid& grid, at::ScalarType dtype,
                            at::Device device = at::kCPU);
// Unpacked indices [rows, m·v] int32 (tests and inspection).
at::Tensor higgs_indices(const HiggsCodes& c);

}  // namespace kvx::higgs
