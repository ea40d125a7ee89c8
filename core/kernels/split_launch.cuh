// Host side of the split-K decode-attention launches (internal: included by the .cu files of
// core/kernels). A launch's grid is (splits, Hkv, B x row groups) of kFastWarps-warp blocks; its kernel
// parameters carry a SplitOutput `out` and end in store_split; combine_kernel then merges the
// splits.
#pragma once
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <map>
#include <mutex>
#include <tuple>

#include "core/common/error.h"
#include "core/kernels/decode_mma.cuh"
#include "core/kernels/packed_kv.h"

namespace kvx::kernels::cuda {
namespace {

// Queries [B, Hq, n, kD] as the kernels read them in place: rows of kD elements, row (b·Hq + h)·n +
// token, float, half or bfloat16 (type 0, 1, 2; see load_q_run); other layouts and dtypes are
// copied.
struct QueryRef {
  at::Tensor q;
  int type;
};
inline QueryRef query_ref(const at::Tensor& q) {
  QueryRef r{q.contiguous(), 0};
  if (r.q.scalar_type() == at::kHalf) r.type = 1;
  else if (r.q.scalar_type() == at::kBFloat16) r.type = 2;
  else if (r.q.scalar_type() != at::kFloat) r.q = r.q.to(at::kFloat).contiguous();
  return r;
}

// KV heads of a cache [sink | body | tail] (from the first part that holds tokens; body_heads 0 when
// the body is empty), checking that the tail holds the n queries' own tokens.
inline int64_t cache_kv_heads(int64_t body_heads, const FpSegment& sink, const FpSegment& tail, int64_t n, const char* who) {
  const int64_t Hkv = body_heads > 0 ? body_heads : tail.tokens() > 0 ? tail.k.size(1) : sink.tokens() > 0 ? sink.k.size(1) : 0;
  if (Hkv == 0) throw error("{}: empty cache", who);
  if (tail.tokens() < n) throw error("{}: the tail holds {} tokens, fewer than the {} queries' own", who, tail.tokens(), n);
  return Hkv;
}

// The launch geometry of queries [B, Hq, n, kD] over Hkv KV heads: rows per KV head (GQA heads x
// chunk tokens), nh rows per block, the row groups per KV head.
struct RowGrid {
  int64_t B, Hq, n, Hkv;
  int rows, nh, qgroups;
  int64_t total_rows() const { return B * Hq * n; }
  int64_t blocks_per_split() const { return B * Hkv * qgroups; }
  dim3 grid(int splits) const { return dim3(splits, unsigned(Hkv), unsigned(B * qgroups)); }
};
inline RowGrid row_grid(const at::Tensor& q, int64_t Hkv, int nh, const char* who) {
  if (q.dim() != 4 || q.size(3) != kD) throw error("{}: q must be [B, Hq, n, {}]", who, kD);
  if (Hkv <= 0 || q.size(1) % Hkv != 0) throw error("{}: {} query heads do not group over {} KV heads", who, q.size(1), Hkv);
  RowGrid g{q.size(0), q.size(1), q.size(2), Hkv, 0, nh, 0};
  g.rows = int(g.Hq / Hkv * g.n);
  g.qgroups = (g.rows + nh - 1) / nh;
  return g;
}

// [B, Hkv, R, kD] fp16/bf16 with contiguous, 16-byte-aligned rows (a token range of a larger buffer
// is fine), as a DenseSeg; R = 0 when undefined or empty. causal: the last `chunk` tokens are the
// queries' own.
DenseSeg dense_seg(const FpSegment& s, int64_t B, int64_t Hkv, int chunk, const char* what) {
  const int64_t R = s.tokens();
  if (s.max_tokens() == 0) return DenseSeg{nullptr, nullptr, 0, 0, 0, -1, false, nullptr, 0, 0};
  for (const at::Tensor* x : {&s.k, &s.v})
    if (x->dim() != 4 || x->size(0) != B || x->size(1) != Hkv || x->size(2) != R || x->size(3) != kD ||
        x->stride(3) != 1 || x->stride(2) != kD || x->stride(0) != x->size(1) * x->stride(1) ||
        reinterpret_cast<uintptr_t>(x->data_ptr()) % 16 != 0)
      throw error("fused attention: {} must be [{}, {}, {}, {}] with contiguous 16-byte-aligned rows", what, B, Hkv, R, kD);
  if (s.k.scalar_type() != s.v.scalar_type() || (s.k.scalar_type() != at::kHalf && s.k.scalar_type() != at::kBFloat16))
    throw error("fused attention: {} must be float16 or bfloat16, keys and values alike", what);
  return DenseSeg{s.k.data_ptr(), s.v.data_ptr(), s.k.stride(1), s.v.stride(1), int(R), int(R - chunk),
                  s.k.scalar_type() == at::kBFloat16, s.grow.step, int(s.grow.off_rate), int(s.grow.len_rate)};
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

// Launches kernel(p) over rg's grid of `splits` splits with p.out set to a workspace, merges the
// splits, and returns the attention output [B, Hq, n, kD] (float).
template <class Params>
at::Tensor launch_split_k(void (*kernel)(Params), Params p, const RowGrid& rg, int splits, int smem, const at::Device& dev,
                          cudaStream_t st) {
  const dim3 grid = rg.grid(splits);
  const int64_t rows = rg.total_rows(), n_part = rows * grid.x, n_out = rows * kD;
  auto ws = at::empty({n_part * (kD + 2) + n_out}, at::TensorOptions().dtype(at::kFloat).device(dev));
  float* w = ws.data_ptr<float>();
  p.out = {w, w + n_part * kD, w + n_part * (kD + 1), int(grid.x)};
  kernel<<<grid, kFastWarps * 32, smem, st>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  // a programmatic dependent launch (see allow_dependent_launch): the combine's launch overlaps the
  // attention kernel's tail (k2v2 at llama3-8b B8 32K on H200: 60.2 -> 59.8 µs)
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(rows));
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
  return ws.narrow(0, n_part * (kD + 2), n_out).view({rg.B, rg.Hq, rg.n, kD});
}

}  // namespace
}  // namespace kvx::kernels::cuda
