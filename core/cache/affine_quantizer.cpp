#include "core/cache/affine_quantizer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cache/bit_packing.h"
#include "core/cache/codec_cuda.h"
#include "core/common/error.h"

namespace kvx {
namespace {

inline uint8_t code_of(float x, float s, float z, float qmax) {
  if (s == 0.f) return 0;
  float q = std::nearbyint((x + z) / s);
  return uint8_t(std::min(std::max(q, 0.f), qmax));
}

}  // namespace

AffineBlock affine_quantize(const at::Tensor& x, int bits, int64_t group, GroupAxis axis,
                            at::ScalarType meta_dtype) {
  if (x.dim() != 4) throw error("affine_quantize: expected [B, H, N, D], got {} dims", x.dim());
  if (!packable_bits(bits)) throw error("affine_quantize: bits must be 1, 2, 3, 4 or 8, got {}", bits);
  if (group < 1) throw error("affine_quantize: group must be >= 1, got {}", group);
  AffineBlock blk;
  blk.bits = bits;
  blk.group = group;
  blk.axis = axis;
  blk.B = x.size(0);
  blk.H = x.size(1);
  blk.N = x.size(2);
  blk.D = x.size(3);
#ifdef KVX_WITH_CUDA
  if (x.is_cuda()) {
    cuda_codec::affine_quantize(x, meta_dtype, blk);
    return blk;
  }
#endif
  const int64_t B = blk.B, H = blk.H, N = blk.N, D = blk.D;
  const at::Tensor xf = x.detach().to(at::kCPU, at::kFloat).contiguous();
  const float* px = xf.data_ptr<float>();
  const float qmax = float((1 << bits) - 1);
  std::vector<uint8_t> codes(size_t(B * H * N * D));
  at::Tensor scale, shift;

  if (axis == GroupAxis::Token) {
    const int64_t G = std::min(group, D);
    const int64_t ng = (D + G - 1) / G;
    const int64_t rows = B * H * N;
    scale = at::empty({B, H, N, ng}, at::kFloat);
    shift = at::empty({B, H, N, ng}, at::kFloat);
    float* ps = scale.data_ptr<float>();
    float* pz = shift.data_ptr<float>();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = px + r * D;
      uint8_t* cr = codes.data() + r * D;
      for (int64_t g = 0; g < ng; ++g) {
        const int64_t d0 = g * G, d1 = std::min(D, d0 + G);
        float m = xr[d0], M = xr[d0];
        for (int64_t d = d0 + 1; d < d1; ++d) {
          m = std::min(m, xr[d]);
          M = std::max(M, xr[d]);
        }
        const float s = (M - m) / qmax, z = -m;
        for (int64_t d = d0; d < d1; ++d) cr[d] = code_of(xr[d], s, z, qmax);
        ps[r * ng + g] = s;
        pz[r * ng + g] = z;
      }
    }
  } else {
    const int64_t G = group;
    const int64_t ng = (N + G - 1) / G;
    scale = at::empty({B, H, ng, D}, at::kFloat);
    shift = at::empty({B, H, ng, D}, at::kFloat);
    float* ps = scale.data_ptr<float>();
    float* pz = shift.data_ptr<float>();
    const int64_t units = B * H * ng;
#pragma omp parallel for schedule(static)
    for (int64_t u = 0; u < units; ++u) {
      const int64_t bh = u / ng, g = u % ng;
      const int64_t t0 = g * G, t1 = std::min(N, t0 + G);
      const float* xb = px + bh * N * D;
      uint8_t* cb = codes.data() + bh * N * D;
      float* m = ps + u * D;  // min, then scale, in place (vectorizes across channels)
      float* z = pz + u * D;  // max, then shift
      for (int64_t d = 0; d < D; ++d) m[d] = z[d] = xb[t0 * D + d];
      for (int64_t t = t0 + 1; t < t1; ++t)
        for (int64_t d = 0; d < D; ++d) {
          m[d] = std::min(m[d], xb[t * D + d]);
          z[d] = std::max(z[d], xb[t * D + d]);
        }
      for (int64_t d = 0; d < D; ++d) {
        const float mn = m[d];
        m[d] = (z[d] - mn) / qmax;
        z[d] = -mn;
      }
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t d = 0; d < D; ++d) cb[t * D + d] = code_of(xb[t * D + d], m[d], z[d], qmax);
    }
  }

  blk.codes = at::empty({packed_bytes(B * H * N * D, bits)}, at::kByte);
  pack_bits(codes.data(), B * H * N * D, bits, blk.codes.data_ptr<uint8_t>());
  blk.scale = scale.to(meta_dtype);
  blk.shift = shift.to(meta_dtype);
  if (!x.device().is_cpu()) {
    blk.codes = blk.codes.to(x.device());
    blk.scale = blk.scale.to(x.device());
    blk.shift = blk.shift.to(x.device());
  }
  return blk;
}

at::Tensor affine_codes(const AffineBlock& blk) {
  auto out = at::empty({blk.B, blk.H, blk.N, blk.D}, at::kByte);
  const at::Tensor packed = blk.codes.cpu().contiguous();
  unpack_bits(packed.data_ptr<uint8_t>(), 0, blk.values(), blk.bits, out.data_ptr<uint8_t>());
  return out;
}

at::Tensor affine_dequantize(const AffineBlock& blk, at::ScalarType dtype) {
#ifdef KVX_WITH_CUDA
  if (blk.codes.is_cuda()) return cuda_codec::affine_dequantize(blk, dtype);
#endif
  const int64_t B = blk.B, H = blk.H, N = blk.N, D = blk.D;
  auto out = at::empty({B, H, N, D}, at::kFloat);
  if (out.numel() == 0) return out.to(blk.codes.device(), dtype);
  const at::Tensor packed = blk.codes.cpu().contiguous();
  const at::Tensor sc = blk.scale.to(at::kCPU, at::kFloat).contiguous();
  const at::Tensor sh = blk.shift.to(at::kCPU, at::kFloat).contiguous();
  const uint8_t* pp = packed.data_ptr<uint8_t>();
  const float* ps = sc.data_ptr<float>();
  const float* pz = sh.data_ptr<float>();
  float* po = out.data_ptr<float>();
  const int64_t rows = B * H * N;
  const bool token = blk.axis == GroupAxis::Token;
  const int64_t G = token ? std::min(blk.group, D) : blk.group;
  const int64_t ng = token ? (D + G - 1) / G : (N + G - 1) / G;
#pragma omp parallel
  {
    std::vector<uint8_t> q(static_cast<size_t>(D));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      unpack_bits(pp, r * D, D, blk.bits, q.data());
      float* o = po + r * D;
      if (token) {
        const float* s = ps + r * ng;
        const float* z = pz + r * ng;
        for (int64_t g = 0; g < ng; ++g) {
          const int64_t d0 = g * G, d1 = std::min(D, d0 + G);
          const float sg = s[g], zg = z[g];
          for (int64_t d = d0; d < d1; ++d) o[d] = sg * float(q[d]) - zg;
        }
      } else {
        const int64_t bh = r / N, t = r % N;
        const float* s = ps + (bh * ng + t / G) * D;
        const float* z = pz + (bh * ng + t / G) * D;
        for (int64_t d = 0; d < D; ++d) o[d] = s[d] * float(q[d]) - z[d];
      }
    }
  }
  return out.to(blk.codes.device(), dtype);
}

}  // namespace kvx
