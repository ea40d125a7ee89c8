// Plain CPU reference of higgs_kv.h (scalar loops; the butterfly in the same order as
// core/higgs/hadamard.cpp, so both give the same fp32 numbers) and the dispatching function.
#include <ATen/ATen.h>

#include <vector>

#include "core/common/error.h"
#include "core/kernels/higgs_kv.h"

namespace kvx::kernels {

namespace {
void check_view(const HiggsView& h) {
  if (h.g < 1 || (h.g & (h.g - 1)) != 0) throw error("higgs_dequantize: group {} is not a power of two", h.g);
  if (h.d < 1 || h.bits < 1 || h.bits > 16) throw error("higgs_dequantize: bad grid d {} / bits {}", h.d, h.bits);
  if (h.points.dim() != 2 || h.points.size(0) != (int64_t(1) << h.bits) || h.points.size(1) != h.d)
    throw error("higgs_dequantize: grid must be [2^bits, d] = [{}, {}]", int64_t(1) << h.bits, h.d);
  const int64_t m = (h.C + h.g - 1) / h.g, v = (h.g + h.d - 1) / h.d;
  if (h.scales.numel() != h.rows * m) throw error("higgs_dequantize: {} scales for {} rows x {} groups", h.scales.numel(), h.rows, m);
  if (h.packed.numel() * 8 < h.rows * m * v * h.bits) throw error("higgs_dequantize: packed indices too short");
}
}  // namespace

namespace ref {

at::Tensor higgs_dequantize(const HiggsView& h, at::ScalarType dtype) {
  check_view(h);
  const int64_t m = (h.C + h.g - 1) / h.g, v = (h.g + h.d - 1) / h.d, g = h.g;
  const auto packed = h.packed.to(at::kCPU).contiguous();
  const auto sc = h.scales.to(at::kCPU, at::kFloat).contiguous();
  const auto pts = h.points.to(at::kCPU, at::kFloat).contiguous();
  const uint8_t* pb = packed.data_ptr<uint8_t>();
  const float* ps = sc.data_ptr<float>();
  const float* pp = pts.data_ptr<float>();
  auto out = at::empty({h.rows, h.C}, at::kFloat);
  float* po = out.data_ptr<float>();
  std::vector<float> grp(size_t(v * h.d));
  for (int64_t r = 0; r < h.rows; ++r)
    for (int64_t j = 0; j < m; ++j) {
      const float s = ps[r * m + j];
      for (int64_t k = 0; k < v; ++k) {
        const int64_t bit = ((r * m + j) * v + k) * h.bits;
        uint32_t idx = 0;
        for (int b = 0; b < h.bits; ++b) idx |= uint32_t((pb[(bit + b) / 8] >> ((bit + b) % 8)) & 1) << b;
        for (int c = 0; c < h.d; ++c) grp[size_t(k * h.d + c)] = pp[idx * h.d + c] * s;
      }
      for (int64_t hs = 1; hs < g; hs *= 2)
        for (int64_t i = 0; i < g; i += 2 * hs)
          for (int64_t t = i; t < i + hs; ++t) {
            const float a = grp[size_t(t)], b = grp[size_t(t + hs)];
            grp[size_t(t)] = a + b;
            grp[size_t(t + hs)] = a - b;
          }
      for (int64_t t = 0; t < g && j * g + t < h.C; ++t) po[r * h.C + j * g + t] = grp[size_t(t)] / float(g);
    }
  return out.to(dtype);
}

}  // namespace ref

at::Tensor higgs_dequantize(const HiggsView& h, at::ScalarType dtype) {
#ifdef KVX_WITH_CUDA
  if (h.scales.is_cuda()) return cuda::higgs_dequantize(h, dtype);
#endif
  return ref::higgs_dequantize(h, dtype).to(h.scales.device());
}

}  // namespace kvx::kernels
