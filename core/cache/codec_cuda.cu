// CUDA paths of the cache codecs; see codec_cuda.h. Each kernel mirrors the CPU loop of
// affine_quantizer.cpp / int8_absmax.cpp operation for operation (the explicit _rn intrinsics
// keep nvcc from fusing a multiply and an add the CPU does separately).
#include "core/cache/codec_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "core/cache/bit_packing.h"
#include "core/common/error.h"
#include "core/kernels/decode_common.cuh"  // to_f, warp_max

namespace kvx::cuda_codec {
namespace {

using kernels::cuda::to_f;
using kernels::cuda::warp_max;

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// Calls f(T{}) with T the device type of a float / half / bfloat16 tensor.
template <typename F>
void with_float_type(at::ScalarType t, const char* what, F&& f) {
  switch (t) {
    case at::kFloat: return f(float{});
    case at::kHalf: return f(__half{});
    case at::kBFloat16: return f(__nv_bfloat16{});
    default: throw error("{}: dtype {} is not float32, float16 or bfloat16", what, c10::toString(t));
  }
}

template <typename T>
T* ptr(const at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

constexpr int kThreads = 256;
unsigned blocks_for(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

// [BH, N, D] in groups of G channels of a token (token) or G tokens of a channel (channel).
struct Geometry {
  int64_t BH, N, D, G, ng;
  bool token;
  // Index of element (row = bh·N + t, d)'s group in the scale/shift tensors.
  __device__ int64_t group_of(int64_t row, int64_t d) const {
    if (token) return row * ng + d / G;
    return ((row / N) * ng + (row % N) / G) * D + d;
  }
};

// One thread per group: s and z = -min in fp32 for the codes, and their stored copies.
template <typename T, typename M>
__global__ void affine_stats_kernel(const T* __restrict__ x, Geometry g, float qmax, int64_t n_groups,
                                    float* __restrict__ s32, float* __restrict__ z32, M* __restrict__ scale,
                                    M* __restrict__ shift) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n_groups) return;
  const T* p;
  int64_t step, len;
  if (g.token) {  // i = row·ng + j
    const int64_t d0 = (i % g.ng) * g.G;
    p = x + (i / g.ng) * g.D + d0;
    step = 1;
    len = min(g.D, d0 + g.G) - d0;
  } else {  // i = (bh·ng + j)·D + d
    const int64_t d = i % g.D, j = (i / g.D) % g.ng, bh = i / (g.D * g.ng), t0 = j * g.G;
    p = x + (bh * g.N + t0) * g.D + d;
    step = g.D;
    len = min(g.N, t0 + g.G) - t0;
  }
  float lo = to_f(p[0]), hi = lo;
  for (int64_t k = 1; k < len; ++k) {
    const float v = to_f(p[k * step]);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  const float s = __fdiv_rn(__fsub_rn(hi, lo), qmax), z = -lo;
  s32[i] = s;
  z32[i] = z;
  store(scale + i, s);
  store(shift + i, z);
}

// One thread per packing unit (8/bits codes in one byte; 8 codes in 3 bytes for 3 bits), codes
// LSB first as bit_packing.h lays them out over the flattened [B, H, N, D] stream.
template <typename T>
__global__ void affine_codes_kernel(const T* __restrict__ x, Geometry g, int bits, float qmax, int64_t n,
                                    int64_t n_bytes, const float* __restrict__ s32, const float* __restrict__ z32,
                                    uint8_t* __restrict__ out) {
  const int per = bits == 3 ? 8 : 8 / bits, unit_bytes = bits == 3 ? 3 : 1;
  const int64_t u = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (u * unit_bytes >= n_bytes) return;
  uint32_t word = 0;
  for (int k = 0; k < per; ++k) {
    const int64_t e = u * per + k;
    if (e >= n) break;
    const int64_t gi = g.group_of(e / g.D, e % g.D);
    const float s = s32[gi];
    uint32_t q = 0;
    if (s != 0.f) q = uint32_t(fminf(fmaxf(rintf(__fdiv_rn(__fadd_rn(to_f(x[e]), z32[gi]), s)), 0.f), qmax));
    word |= q << (k * bits);
  }
  for (int b = 0; b < unit_bytes && u * unit_bytes + b < n_bytes; ++b) out[u * unit_bytes + b] = uint8_t(word >> (8 * b));
}

// One thread per value: x̂ = s·q - z in fp32, then the output dtype.
template <typename M, typename O>
__global__ void affine_dequantize_kernel(const uint8_t* __restrict__ packed, Geometry g, int bits, int64_t n,
                                         const M* __restrict__ scale, const M* __restrict__ shift, O* __restrict__ out) {
  const int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (e >= n) return;
  const int64_t bit = e * bits;
  const int sh = int(bit & 7);
  uint32_t v = packed[bit >> 3];
  if (sh + bits > 8) v |= uint32_t(packed[(bit >> 3) + 1]) << 8;
  const float q = float((v >> sh) & ((1u << bits) - 1));
  const int64_t gi = g.group_of(e / g.D, e % g.D);
  store(out + e, __fsub_rn(__fmul_rn(to_f(scale[gi]), q), to_f(shift[gi])));
}

// One block per token row of D channels (one thread each): absmax by warp shuffles, then a
// shared-memory pass over the warps' maxima.
// Row r of x ([B·H·n, D] contiguous) goes to (b·H + h, t) of codes / scale, planes codes_bh / scale_bh apart
// (a token range of a larger buffer).
// A graph-replayed step (step != nullptr) moves the rows of x and of the destination off_rate·d
// tokens along their buffers; x's planes are x_bh apart.
template <typename T>
__global__ void int8_quantize_kernel(const T* __restrict__ x, int64_t x_bh, int D, int64_t n, int8_t* __restrict__ codes,
                                     int64_t codes_bh, float* __restrict__ scale, int64_t scale_bh,
                                     const int64_t* __restrict__ step, int64_t off_rate) {
  __shared__ float warp_amax[32];
  const int64_t row = blockIdx.x, bh = row / n;
  const int64_t t = row % n + (step ? off_rate * *step : 0);
  const int d = threadIdx.x;
  const float v = to_f(x[bh * x_bh + t * D + d]);
  float a = warp_max(fabsf(v));
  if (d % 32 == 0) warp_amax[d / 32] = a;
  __syncthreads();
  a = 0.f;
  for (int w = 0; w < (D + 31) / 32; ++w) a = fmaxf(a, warp_amax[w]);
  const float s = fmaxf(a, 1e-8f) / 127.f;
  // rintf: round half to even, as the reference's nearbyint; x/s in fp32 as the reference
  codes[bh * codes_bh + t * D + d] = int8_t(fminf(fmaxf(rintf(v / s), -127.f), 127.f));
  if (d == 0) scale[bh * scale_bh + t] = s;
}

// x as the kernels read it: contiguous, in float / half / bfloat16 (other dtypes become float).
at::Tensor kernel_input(const at::Tensor& x_in) {
  const at::Tensor x = x_in.detach().contiguous();
  const auto t = x.scalar_type();
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16 ? x : x.to(at::kFloat);
}

Geometry geometry_of(const AffineBlock& b) {
  const bool token = b.axis == GroupAxis::Token;
  const int64_t G = token ? std::min(b.group, b.D) : b.group;
  return {b.B * b.H, b.N, b.D, G, token ? (b.D + G - 1) / G : (b.N + G - 1) / G, token};
}

}  // namespace

void affine_quantize(const at::Tensor& x_in, at::ScalarType meta_dtype, AffineBlock& blk) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = kernel_input(x_in);
  const int bits = blk.bits;
  const Geometry g = geometry_of(blk);
  const auto meta_shape = g.token ? std::vector<int64_t>{blk.B, blk.H, blk.N, g.ng} : std::vector<int64_t>{blk.B, blk.H, g.ng, blk.D};
  blk.scale = at::empty(meta_shape, x.options().dtype(meta_dtype));
  blk.shift = at::empty(meta_shape, x.options().dtype(meta_dtype));
  const int64_t n = blk.values(), n_bytes = packed_bytes(n, bits), n_groups = blk.scale.numel();
  blk.codes = at::empty({n_bytes}, x.options().dtype(at::kByte));
  if (n == 0) return;
  const at::Tensor sz = at::empty({2, n_groups}, x.options().dtype(at::kFloat));
  float* s32 = sz.data_ptr<float>();
  float* z32 = s32 + n_groups;
  const float qmax = float((1 << bits) - 1);
  const int64_t units = bits == 3 ? (n + 7) / 8 : (n + 8 / bits - 1) / (8 / bits);
  auto st = at::cuda::getCurrentCUDAStream();
  with_float_type(x.scalar_type(), "affine_quantize", [&](auto xt) {
    using T = decltype(xt);
    with_float_type(meta_dtype, "affine_quantize metadata", [&](auto mt) {
      using M = decltype(mt);
      affine_stats_kernel<T, M><<<blocks_for(n_groups), kThreads, 0, st>>>(ptr<const T>(x), g, qmax, n_groups, s32,
                                                                          z32, ptr<M>(blk.scale), ptr<M>(blk.shift));
    });
    affine_codes_kernel<T><<<blocks_for(units), kThreads, 0, st>>>(ptr<const T>(x), g, bits, qmax, n, n_bytes, s32, z32,
                                                                   ptr<uint8_t>(blk.codes));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor affine_dequantize(const AffineBlock& blk, at::ScalarType dtype) {
  const c10::cuda::CUDAGuard guard(blk.codes.device());
  auto out = at::empty({blk.B, blk.H, blk.N, blk.D}, blk.codes.options().dtype(dtype));
  const int64_t n = blk.values();
  if (n == 0) return out;
  const at::Tensor sc = blk.scale.contiguous(), sh = blk.shift.contiguous();
  const Geometry g = geometry_of(blk);
  auto st = at::cuda::getCurrentCUDAStream();
  with_float_type(sc.scalar_type(), "affine_dequantize metadata", [&](auto mt) {
    using M = decltype(mt);
    with_float_type(dtype, "affine_dequantize", [&](auto ot) {
      using O = decltype(ot);
      affine_dequantize_kernel<M, O><<<blocks_for(n), kThreads, 0, st>>>(ptr<const uint8_t>(blk.codes), g, blk.bits, n,
                                                                         ptr<const M>(sc), ptr<const M>(sh), ptr<O>(out));
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

bool int8_supported(const at::Tensor& x) {
  const int64_t D = x.size(3);
  return D >= 32 && D <= 1024 && D % 32 == 0;
}

void int8_quantize_into(const at::Tensor& x_in, Int8Block& dst, const kernels::StepGrowth& moved) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  // rows moved by a step counter are read where they lie: [B, H, n, D] with contiguous rows
  const bool rows_ok = x_in.dim() == 4 && x_in.stride(3) == 1 && x_in.stride(2) == x_in.size(3) &&
                       x_in.stride(0) == x_in.size(1) * x_in.stride(1);
  if (moved.step && !rows_ok) throw error("int8_quantize: rows moved by a step counter must lie as [B, H, n, D] rows");
  const at::Tensor x = moved.step ? x_in : kernel_input(x_in);
  const int64_t D = x.size(3), n = x.size(2), rows = x.size(0) * x.size(1) * n;
  if (rows == 0) return;
  const int64_t x_bh = moved.step ? x.stride(1) : n * D;
  auto st = at::cuda::getCurrentCUDAStream();
  with_float_type(x.scalar_type(), "int8_quantize", [&](auto xt) {
    using T = decltype(xt);
    int8_quantize_kernel<T><<<unsigned(rows), unsigned(D), 0, st>>>(
        ptr<const T>(x), x_bh, int(D), n, dst.codes.data_ptr<int8_t>(), dst.codes.stride(1), dst.scale.data_ptr<float>(),
        dst.scale.stride(1), moved.step, moved.off_rate);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

Int8Block int8_quantize(const at::Tensor& x) {
  Int8Block r;
  r.codes = at::empty(x.sizes(), x.options().dtype(at::kChar));
  r.scale = at::empty({x.size(0), x.size(1), x.size(2)}, x.options().dtype(at::kFloat));
  cuda_codec::int8_quantize_into(x, r, {});
  return r;
}

}  // namespace kvx::cuda_codec
