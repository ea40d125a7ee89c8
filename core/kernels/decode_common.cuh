// Device helpers shared by the decode-attention .cu files of core/kernels (internal: included by
// .cu files only). Split-K decode attention writes per split an unnormalized output O, the running
// max M (log2 domain) and the sum L; combine_kernel merges the splits by log-sum-exp.
// Everything sits in an unnamed namespace so that each .cu file gets its own copy (no -rdc).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace kvx::kernels::cuda {

// Where a split-K launch puts every split's partials for combine_kernel: part_o [rows, n_splits,
// kD], part_m and part_l [rows, n_splits] (rows: the query rows, (b·Hq + h)·n + token). Outside the
// unnamed namespace, as the kernel parameter structs that hold it: several .cu files launch the
// packed kernels with one parameter type.
struct SplitOutput {
  float* part_o;
  float* part_m;
  float* part_l;
  int n_splits;
};

namespace {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(float x) { return x; }

// Query elements at..at+N-1 (elements from the tensor's start) in the tensor's own dtype (0 float,
// 1 half, 2 bfloat16): no conversion kernel before the attention launch, one type test per run.
template <int N>
__device__ __forceinline__ void load_q_run(const void* q, int type, int64_t at, float (&x)[N]) {
  if (type == 1) {
    const __half* p = static_cast<const __half*>(q) + at;
#pragma unroll
    for (int j = 0; j < N; ++j) x[j] = __half2float(p[j]);
  } else if (type == 2) {
    const __nv_bfloat16* p = static_cast<const __nv_bfloat16*>(q) + at;
#pragma unroll
    for (int j = 0; j < N; ++j) x[j] = __bfloat162float(p[j]);
  } else {
    const float* p = static_cast<const float*>(q) + at;
#pragma unroll
    for (int j = 0; j < N; ++j) x[j] = p[j];
  }
}

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, o));
  return x;
}

// Programmatic dependent launch (sm_90+; launch_split_k): a split-K kernel lets combine_kernel's
// launch start as soon as all its blocks run, and combine_kernel waits for the split-K kernel's end
// and memory before it reads the partials. The launch then overlaps the split-K kernel's tail.
__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wait_for_primary_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// One block per query row: out[bq, :] = Σ_s O_s·2^(M_s - M) / Σ_s L_s·2^(M_s - M). The split
// loops are unrolled so that their loads are in flight together (one at a time, 8 splits took 5 µs).
template <int D>
__global__ void combine_kernel(const float* __restrict__ part_o, const float* __restrict__ part_m,
                               const float* __restrict__ part_l, int n_splits, float* __restrict__ out) {
  wait_for_primary_grid();
  const int64_t bq = blockIdx.x;
  const int d = threadIdx.x;
  float M = -INFINITY;
#pragma unroll 8
  for (int s = 0; s < n_splits; ++s) M = fmaxf(M, part_m[bq * n_splits + s]);
  float L = 0.f, O = 0.f;
  if (M != -INFINITY)
#pragma unroll 8
    for (int s = 0; s < n_splits; ++s) {
      const float f = exp2f(part_m[bq * n_splits + s] - M);
      L += part_l[bq * n_splits + s] * f;
      O += part_o[(bq * n_splits + s) * D + d] * f;
    }
  out[bq * D + d] = L > 0.f ? O / L : 0.f;
}

}  // namespace
}  // namespace kvx::kernels::cuda
