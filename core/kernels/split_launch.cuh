// Host side of the split-K decode-attention launches (internal: included by the .cu files of
// core/kernels). A launch's grid is (splits, Hkv, B) of kFastWarps-warp blocks; its kernel
// parameters carry a SplitOutput `out` and end in store_split; combine_kernel then merges the
// splits.
#pragma once
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <map>
#include <mutex>
#include <tuple>

#include "core/kernels/decode_mma.cuh"

namespace kvx::kernels::cuda {
namespace {

// A query [B, Hq, kD] as the kernels read it in place: float, half or bfloat16 (type 0, 1, 2; see
// load_q_run) with contiguous heads, any batch stride; other layouts and dtypes are copied.
struct QueryRef {
  at::Tensor q;
  int type;
};
inline QueryRef query_ref(const at::Tensor& q) {
  QueryRef r{q, 0};
  if (q.stride(2) != 1 || q.stride(1) != kD) r.q = q.contiguous();
  if (r.q.scalar_type() == at::kHalf) r.type = 1;
  else if (r.q.scalar_type() == at::kBFloat16) r.type = 2;
  else if (r.q.scalar_type() != at::kFloat) r.q = r.q.to(at::kFloat).contiguous();
  return r;
}

// Resident blocks per SM of kernel f with smem bytes of dynamic shared memory (cached per kernel,
// smem and device: asked once per decode step and layer).
template <class Params>
int resident_blocks(void (*f)(Params), int smem) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, int>, int> cache;
  const std::lock_guard<std::mutex> lock(mu);
  int& n = cache[{reinterpret_cast<const void*>(f), smem, int(at::cuda::current_device())}];
  if (n == 0) {
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, f, kFastWarps * 32, smem));
    n = std::max(1, n);
  }
  return n;
}

// Launches kernel(p) over grid with p.out set to a workspace, merges the splits, and returns the
// attention output [B, Hq, kD] (float).
template <class Params>
at::Tensor launch_split_k(void (*kernel)(Params), Params p, dim3 grid, int smem, int64_t Hq, const at::Device& dev,
                          cudaStream_t st) {
  const int64_t B = grid.z, n_part = B * Hq * grid.x, n_out = B * Hq * kD;
  auto ws = at::empty({n_part * (kD + 2) + n_out}, at::TensorOptions().dtype(at::kFloat).device(dev));
  float* w = ws.data_ptr<float>();
  p.out = {w, w + n_part * kD, w + n_part * (kD + 1), int(grid.x)};
  kernel<<<grid, kFastWarps * 32, smem, st>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  // a programmatic dependent launch (see allow_dependent_launch): the combine's launch overlaps the
  // attention kernel's tail (k2v2 at llama3-8b B8 32K on H200: 60.2 -> 59.8 µs)
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(B * Hq);
  cfg.blockDim = dim3(kD);
  cfg.stream = st;
  cudaLaunchAttribute attr = {};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  C10_CUDA_CHECK(cudaLaunchKernelEx(&cfg, combine_kernel<kD>, static_cast<const float*>(p.out.part_o),
                                    static_cast<const float*>(p.out.part_m), static_cast<const float*>(p.out.part_l),
                                    int(grid.x), w + n_part * (kD + 2)));
  return ws.narrow(0, n_part * (kD + 2), n_out).view({B, Hq, kD});
}

}  // namespace
}  // namespace kvx::kernels::cuda
