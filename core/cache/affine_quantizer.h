// Affine min-max group quantizer (docs/methods/kvq.md, Quanto semantics) with the two KVQ
// groupings, storing real packed codes plus 16-bit per-group metadata.
//
// For a group x_1..x_G and b bits (statistics in fp32):
//   m = min x, M = max x, s = (M - m)/(2^b - 1), z = -m,
//   q = clamp(nearbyint((x + z)/s), 0, 2^b - 1)   (round half to even; s == 0 -> q = 0),
//   x̂ = s·q - z, with s and z read back from their 16-bit storage.
// Groupings of a [B, H, N, D] tensor:
//   Token:   runs of G' = min(G, D) channels inside each (b, h, t) head vector; a shorter last
//            run when G' does not divide D (kvx resolution: groups never straddle tokens).
//   Channel: for each (b, h) and channel d, runs of G tokens starting at token 0 of the block;
//            the last run may be shorter.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kvx {

enum class GroupAxis { Token, Channel };

struct AffineBlock {
  int bits = 4;
  int64_t group = 64;  // configured G (the token grouping clamps it to D)
  GroupAxis axis = GroupAxis::Token;
  int64_t B = 0, H = 0, N = 0, D = 0;
  at::Tensor codes;   // uint8 [packed_bytes(B·H·N·D, bits)]: codes in [B,H,N,D] row-major order
  at::Tensor scale;   // 16-bit float; Token: [B,H,N,ceil(D/G')], Channel: [B,H,ceil(N/G),D]
  at::Tensor shift;   // same shape/dtype as scale; holds z = -min

  int64_t values() const { return B * H * N * D; }
  int64_t groups() const { return scale.defined() ? scale.numel() : 0; }
  int64_t code_bits() const { return codes.defined() ? codes.numel() * 8 : 0; }
  int64_t scale_bits() const { return scale.defined() ? scale.numel() * scale.element_size() * 8 : 0; }
  int64_t shift_bits() const { return shift.defined() ? shift.numel() * shift.element_size() * 8 : 0; }
};

// x: [B, H, N, D] floating tensor (any float dtype/device). meta_dtype: at::kHalf or at::kBFloat16.
AffineBlock affine_quantize(const at::Tensor& x, int bits, int64_t group, GroupAxis axis,
                            at::ScalarType meta_dtype);

// [B, H, N, D] in `dtype` on the codes' device; dequantized row by row.
at::Tensor affine_dequantize(const AffineBlock& blk, at::ScalarType dtype);

// The raw codes as uint8 [B, H, N, D] (tests and debugging).
at::Tensor affine_codes(const AffineBlock& blk);

}  // namespace kvx
