// CUDA kernel of higgs_kv.h: one warp per (row, group) of g coordinates, E = g/32 consecutive
// coordinates per lane (g < 32: one per lane, the upper lanes idle). Each lane unpacks its indices,
// scales its grid coordinates, and the warp runs the butterfly in registers (stages h < E inside a
// lane, the others through __shfl_xor_sync) with the very operations of core/higgs/hadamard.cpp:
// (a, b) -> (a + b, a - b) per stage, then /g, so the result equals the CPU dequantization bit for
// bit. The output is written once, in the requested dtype.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/common/error.h"
#include "core/higgs/higgs_kv.h"

namespace kvx::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

__device__ __forceinline__ void store(float* p, float x) { *p = x; }
__device__ __forceinline__ void store(__half* p, float x) { *p = __float2half(x); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float x) { *p = __float2bfloat16(x); }

template <int E, typename TO>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    higgs_dequantize_kernel(const uint8_t* __restrict__ packed, const __half* __restrict__ scales,
                            const float* __restrict__ points, int64_t rows, int64_t C, int g, int m, int v, int d,
                            int bits, TO* __restrict__ out) {
  const int lane = threadIdx.x % 32;
  const int64_t item = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;  // (row, group)
  if (item >= rows * m) return;  // whole warps only: the shuffles below see every lane
  const int64_t r = item / m;
  const int j = int(item % m);
  const bool live = lane * E < g;
  const float s = __half2float(scales[item]);
  float x[E];
#pragma unroll
  for (int i = 0; i < E; ++i) {
    const int e = live ? lane * E + i : 0;
    const int64_t bit = (item * v + e / d) * int64_t(bits);
    uint32_t w = 0;
    for (int64_t byte = bit / 8; byte <= (bit + bits - 1) / 8; ++byte) w |= uint32_t(packed[byte]) << ((byte - bit / 8) * 8);
    const uint32_t idx = (w >> (bit % 8)) & ((1u << bits) - 1);
    x[i] = points[idx * d + e % d] * s;
  }
  // stages h < E inside the lane (h a compile-time constant: x stays in registers) ...
#pragma unroll
  for (int h = 1; h < E; h *= 2)
#pragma unroll
    for (int i = 0; i < E; ++i)
      if ((i & h) == 0) {
        const float a = x[i], b = x[i + h];
        x[i] = a + b;
        x[i + h] = a - b;
      }
  // ... then h = o·E across lanes: the lower partner holds a, the upper b
  for (int o = 1; o * E < g; o *= 2)
#pragma unroll
    for (int i = 0; i < E; ++i) {
      const float other = __shfl_xor_sync(0xffffffffu, x[i], o);
      x[i] = (lane & o) ? other - x[i] : x[i] + other;
    }
  if (!live) return;
#pragma unroll
  for (int i = 0; i < E; ++i) {
    const int64_t c = int64_t(j) * g + lane * E + i;
    if (c < C) store(out + r * C + c, x[i] / float(g));
  }
}

template <typename TO>
void launch(int64_t g, dim3 grid, cudaStream_t st, const uint8_t* packed, const __half* sc, const float* pts,
            int64_t rows, int64_t C, int m, int v, int d, int bits, TO* out) {
  switch (g <= 32 ? 1 : g / 32) {
#define KVX_E(E) \
  case E: higgs_dequantize_kernel<E, TO><<<grid, kWarpsPerBlock * 32, 0, st>>>(packed, sc, pts, rows, C, int(g), m, v, d, bits, out); break;
    KVX_E(1) KVX_E(2) KVX_E(4) KVX_E(8) KVX_E(16) KVX_E(32)
#undef KVX_E
    default: throw error("higgs_dequantize: CUDA group {} must be a power of two <= 1024", g);
  }
}

}  // namespace

at::Tensor higgs_dequantize(const HiggsView& h, at::ScalarType dtype) {
  const c10::cuda::CUDAGuard guard(h.scales.device());
  if (h.g < 1 || h.g > 1024 || (h.g & (h.g - 1)) != 0) throw error("higgs_dequantize: CUDA group {} must be a power of two <= 1024", h.g);
  if (h.d < 1 || h.bits < 1 || h.bits > 16 || h.points.dim() != 2 || h.points.size(0) != (int64_t(1) << h.bits) ||
      h.points.size(1) != h.d)
    throw error("higgs_dequantize: grid must be [2^bits, d] with 1 <= bits <= 16");
  const int64_t m = (h.C + h.g - 1) / h.g, v = (h.g + h.d - 1) / h.d;
  if (h.scales.numel() != h.rows * m || h.packed.numel() * 8 < h.rows * m * v * h.bits)
    throw error("higgs_dequantize: {} scales / {} index bytes do not fit {} rows x {} groups", h.scales.numel(),
                h.packed.numel(), h.rows, m);
  const auto dev = h.scales.device();
  const auto packed = h.packed.to(dev, at::kByte).contiguous();
  const auto scales = h.scales.to(at::kHalf).contiguous();
  const auto points = h.points.to(dev, at::kFloat).contiguous();
  const at::ScalarType out_type =
      dtype == at::kHalf || dtype == at::kBFloat16 ? dtype : at::kFloat;  // others: fp32, then cast
  auto out = at::empty({h.rows, h.C}, scales.options().dtype(out_type));
  if (h.rows > 0 && m > 0) {
    const dim3 grid(unsigned((h.rows * m + kWarpsPerBlock - 1) / kWarpsPerBlock));
    auto st = at::cuda::getCurrentCUDAStream();
    const auto* pb = packed.data_ptr<uint8_t>();
    const auto* ps = reinterpret_cast<const __half*>(scales.data_ptr<at::Half>());
    const auto* pp = points.data_ptr<float>();
    if (out_type == at::kHalf)
      launch(h.g, grid, st, pb, ps, pp, h.rows, h.C, int(m), int(v), h.d, h.bits,
             reinterpret_cast<__half*>(out.data_ptr<at::Half>()));
    else if (out_type == at::kBFloat16)
      launch(h.g, grid, st, pb, ps, pp, h.rows, h.C, int(m), int(v), h.d, h.bits,
             reinterpret_cast<__nv_bfloat16*>(out.data_ptr<at::BFloat16>()));
    else
      launch(h.g, grid, st, pb, ps, pp, h.rows, h.C, int(m), int(v), h.d, h.bits, out.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return out_type == dtype ? out : out.to(dtype);
}

}  // namespace kvx::kernels::cuda
