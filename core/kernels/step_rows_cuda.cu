// CUDA kernel of step_rows.h.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "core/common/error.h"
#include "core/kernels/step_rows.h"

namespace kvx::kernels::cuda {
namespace {

struct RowsRef {  // [B, H, n, D] in elements of type W
  char* dst[2];
  const char* src[2];
  int64_t ds[2][3], ss[2][3];  // (b, h, token) strides of dst and src, elements
};

// One thread per element of (K or V) x [B, H, n, D]; W: the element's width.
template <typename W>
__global__ void put_rows_kernel(const RowsRef r, int H, int n, int D, const int64_t* step, int64_t off_rate, int64_t total) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= 2 * total) return;
  const int kv = int(i / total);
  int64_t e = i % total;
  const int c = int(e % D);
  e /= D;
  const int t = int(e % n);
  e /= n;
  const int h = int(e % H);
  const int64_t b = e / H;
  const int64_t d = step ? *step : 0;
  const int64_t* ds = r.ds[kv];
  const int64_t* ss = r.ss[kv];
  reinterpret_cast<W*>(r.dst[kv])[b * ds[0] + h * ds[1] + (t + off_rate * d) * ds[2] + c] =
      reinterpret_cast<const W*>(r.src[kv])[b * ss[0] + h * ss[1] + t * ss[2] + c];
}

}  // namespace

void put_rows(const at::Tensor& dst_k, const at::Tensor& dst_v, const at::Tensor& xk_in, const at::Tensor& xv_in,
              const StepGrowth& g) {
  const c10::cuda::CUDAGuard guard(dst_k.device());
  const at::Tensor xk = xk_in.to(dst_k.scalar_type()), xv = xv_in.to(dst_k.scalar_type());
  if (dst_k.dim() != 4 || dst_v.scalar_type() != dst_k.scalar_type())
    throw error("put_rows: destinations must be [B, H, n, D] of one dtype");
  for (const at::Tensor* t : {&dst_k, &dst_v, &xk, &xv})
    if (t->stride(3) != 1) throw error("put_rows: rows must be contiguous");
  const int64_t B = dst_k.size(0), H = dst_k.size(1), n = dst_k.size(2), D = dst_k.size(3), total = B * H * n * D;
  if (total == 0) return;
  RowsRef r{};
  const at::Tensor* dst[2] = {&dst_k, &dst_v};
  const at::Tensor* src[2] = {&xk, &xv};
  for (int i = 0; i < 2; ++i) {
    r.dst[i] = static_cast<char*>(dst[i]->data_ptr());
    r.src[i] = static_cast<const char*>(src[i]->data_ptr());
    for (int j = 0; j < 3; ++j) {
      r.ds[i][j] = dst[i]->stride(j);
      r.ss[i][j] = src[i]->stride(j);
    }
  }
  const int threads = 256;
  const unsigned blocks = unsigned((2 * total + threads - 1) / threads);
  auto st = at::cuda::getCurrentCUDAStream();
  switch (dst_k.element_size()) {
    case 1: put_rows_kernel<uint8_t><<<blocks, threads, 0, st>>>(r, int(H), int(n), int(D), g.step, g.off_rate, total); break;
    case 2: put_rows_kernel<uint16_t><<<blocks, threads, 0, st>>>(r, int(H), int(n), int(D), g.step, g.off_rate, total); break;
    case 4: put_rows_kernel<uint32_t><<<blocks, threads, 0, st>>>(r, int(H), int(n), int(D), g.step, g.off_rate, total); break;
    default: throw error("put_rows: {}-byte elements are not supported", dst_k.element_size());
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace kvx::kernels::cuda
