// CPU reference of higgs_kv.h (core/higgs's own dequantization of the same codes) and the
// dispatching function.
#include <ATen/ATen.h>

#include "core/common/error.h"
#include "core/higgs/higgs_quantizer.h"
#include "core/higgs/higgs_kv.h"

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
  higgs::HiggsCodes c;
  c.rows = h.rows;
  c.C = h.C;
  c.g = h.g;
  c.d = h.d;
  c.n = 1 << h.bits;
  c.bits = h.bits;
  c.packed = h.packed.to(at::kCPU).contiguous();
  c.scales = h.scales.to(at::kCPU).contiguous();
  return higgs::higgs_dequantize(c, higgs::make_grid(h.d, c.n, h.points.to(at::kCPU, at::kFloat).contiguous()), dtype);
}

}  // namespace ref

at::Tensor higgs_dequantize(const HiggsView& h, at::ScalarType dtype) {
#ifdef KVX_WITH_CUDA
  if (h.scales.is_cuda()) return cuda::higgs_dequantize(h, dtype);
#endif
  return ref::higgs_dequantize(h, dtype).to(h.scales.device());
}

}  // namespace kvx::kernels
