#include "core/cache/int8_absmax.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "core/cache/codec_cuda.h"
#include "core/common/error.h"

namespace kvx {

Int8Block int8_quantize(const at::Tensor& x) {
  if (x.dim() != 4) throw error("int8_quantize: expected [B, H, N, D], got {} dims", x.dim());
#ifdef KVX_WITH_CUDA
  if (x.is_cuda() && cuda_codec::int8_supported(x)) return cuda_codec::int8_quantize(x);
#endif
  const int64_t B = x.size(0), H = x.size(1), N = x.size(2), D = x.size(3);
  const at::Tensor xf = x.detach().to(at::kCPU, at::kFloat).contiguous();
  Int8Block blk;
  blk.codes = at::empty({B, H, N, D}, at::kChar);
  blk.scale = at::empty({B, H, N}, at::kFloat);
  const float* px = xf.data_ptr<float>();
  int8_t* pc = blk.codes.data_ptr<int8_t>();
  float* ps = blk.scale.data_ptr<float>();
  const int64_t rows = B * H * N;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = px + r * D;
    float a = 0.f;
    for (int64_t d = 0; d < D; ++d) a = std::max(a, std::fabs(xr[d]));
    a = std::max(a, 1e-8f);
    const float s = a / 127.f;
    for (int64_t d = 0; d < D; ++d)
      pc[r * D + d] = int8_t(std::min(std::max(std::nearbyint(xr[d] / s), -127.f), 127.f));
    ps[r] = s;
  }
  if (!x.device().is_cpu()) {
    blk.codes = blk.codes.to(x.device());
    blk.scale = blk.scale.to(x.device());
  }
  return blk;
}

void int8_quantize_into(const at::Tensor& x, Int8Block& dst, const kernels::StepGrowth& moved) {
#ifdef KVX_WITH_CUDA
  if (x.is_cuda() && dst.codes.is_cuda() && cuda_codec::int8_supported(x)) return cuda_codec::int8_quantize_into(x, dst, moved);
#endif
  if (moved.step && !x.device().is_cpu())
    throw error("int8_quantize_into: rows moved by a step counter on {} need the CUDA kernel", x.device().str());
  kernels::StepGrowth g = moved;
  g.len_rate = 0;
  const Int8Block q = int8_quantize(kernels::at_step(x, g));
  kernels::at_step(dst.codes, g).copy_(q.codes);
  kernels::at_step(dst.scale, g).copy_(q.scale);
}

at::Tensor int8_dequantize(const Int8Block& blk, at::ScalarType dtype) {
  return (blk.codes.to(at::kFloat) * blk.scale.unsqueeze(-1)).to(dtype);
}

}  // namespace kvx
