// CUDA kernels of model_ops.h; tests/kernels/test_model_ops.cpp compares each with the ATen
// sequence it replaces.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/common/error.h"
#include "core/kernels/decode_common.cuh"
#include "core/kernels/model_ops.h"

namespace kvx::kernels::cuda {
namespace {

// Round to T and back: the value an ATen op of dtype T stores.
template <typename T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 from_f(float x) { return __float2bfloat16(x); }
template <>
__device__ __forceinline__ __half from_f(float x) { return __float2half(x); }
template <>
__device__ __forceinline__ float from_f(float x) { return x; }
template <typename T>
__device__ __forceinline__ float rnd(float x) { return to_f(from_f<T>(x)); }

// One block per row of H elements.
template <typename T>
__global__ void rms_norm_kernel(const T* __restrict__ x, const T* __restrict__ w, int H, float eps, T* __restrict__ out) {
  __shared__ float warp_sums[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * H;
  float s = 0.f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    const float v = to_f(xr[i]);
    s += v * v;
  }
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(kFullMask, s, o);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x < 32) {
    s = threadIdx.x < blockDim.x / 32 ? warp_sums[threadIdx.x] : 0.f;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(kFullMask, s, o);
    if (threadIdx.x == 0) warp_sums[0] = s;
  }
  __syncthreads();
  const float r = rsqrtf(warp_sums[0] / float(H) + eps);
  for (int i = threadIdx.x; i < H; i += blockDim.x)
    out[row * H + i] = from_f<T>(to_f(w[i]) * rnd<T>(to_f(xr[i]) * r));
}

// One thread per output element of x [B, H, T, D] (strides sx), out contiguous.
template <typename T>
__global__ void rope_kernel(const T* __restrict__ x, int64_t sb, int64_t sh, int64_t st, int H, int Tn, int D,
                            const float* __restrict__ cos, const float* __restrict__ sin, int64_t pos0,
                            const int64_t* __restrict__ step, int64_t n, T* __restrict__ out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  if (step) pos0 += *step;
  const int d = int(i % D);
  const int64_t rest = i / D;
  const int t = int(rest % Tn), h = int((rest / Tn) % H);
  const int64_t b = rest / (int64_t(Tn) * H);
  const T* xr = x + b * sb + h * sh + t * st;
  const int half = D / 2;
  const float xv = to_f(xr[d]);
  const float rot = d < half ? -to_f(xr[d + half]) : to_f(xr[d - half]);  // rotate_half
  const float c = rnd<T>(cos[(pos0 + t) * D + d]), s = rnd<T>(sin[(pos0 + t) * D + d]);
  out[i] = from_f<T>(rnd<T>(__fmul_rn(xv, c)) + rnd<T>(__fmul_rn(rot, s)));  // two roundings, no FMA: as ATen
}

// One thread per output element of [rows, I].
template <typename T>
__global__ void silu_mul_kernel(const T* __restrict__ gu, int64_t I, int64_t n, T* __restrict__ out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t r = i / I, c = i % I;
  const float g = to_f(gu[r * 2 * I + c]), u = to_f(gu[r * 2 * I + I + c]);
  out[i] = from_f<T>(rnd<T>(g / (1.f + expf(-g))) * u);
}

template <typename F>
void dispatch(const at::Tensor& x, const char* who, F&& f) {
  switch (x.scalar_type()) {
    case at::kBFloat16: f(static_cast<__nv_bfloat16*>(nullptr)); break;
    case at::kHalf: f(static_cast<__half*>(nullptr)); break;
    case at::kFloat: f(static_cast<float*>(nullptr)); break;
    default: throw error("{}: unsupported dtype {}", who, c10::toString(x.scalar_type()));
  }
}
template <typename T>
const T* ptr(const at::Tensor& t) { return reinterpret_cast<const T*>(t.data_ptr()); }
template <typename T>
T* mptr(at::Tensor& t) { return reinterpret_cast<T*>(t.data_ptr()); }

unsigned blocks(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

}  // namespace

at::Tensor rms_norm(const at::Tensor& x_in, const at::Tensor& w_in, double eps) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous();
  const auto w = w_in.to(x.scalar_type()).contiguous();
  const int H = int(x.size(-1));
  const int64_t rows = x.numel() / H;
  auto out = at::empty_like(x);
  if (rows == 0) return out;
  const int threads = std::min(1024, std::max(32, (H / 4 + 31) / 32 * 32));
  dispatch(x, "rms_norm", [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    rms_norm_kernel<T><<<unsigned(rows), threads, 0, at::cuda::getCurrentCUDAStream()>>>(ptr<T>(x), ptr<T>(w), H, float(eps),
                                                                                      mptr<T>(out));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t pos0, const int64_t* step) {
  const c10::cuda::CUDAGuard guard(x.device());
  if (x.dim() != 4 || x.stride(3) != 1 || cos.scalar_type() != at::kFloat || !cos.is_contiguous() || !sin.is_contiguous())
    throw error("rope: expected x [B, H, T, D] with contiguous rows and fp32 contiguous tables");
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3);
  if (pos0 < 0 || pos0 + T > cos.size(0) || cos.size(1) != D) throw error("rope: positions {}..{} outside the table", pos0, pos0 + T);
  auto out = at::empty({B, H, T, D}, x.options());
  const int64_t n = out.numel();
  if (n == 0) return out;
  dispatch(x, "rope", [&](auto* tag) {
    using TT = std::remove_pointer_t<decltype(tag)>;
    rope_kernel<TT><<<blocks(n, 256), 256, 0, at::cuda::getCurrentCUDAStream()>>>(
        ptr<TT>(x), x.stride(0), x.stride(1), x.stride(2), int(H), int(T), int(D), cos.data_ptr<float>(), sin.data_ptr<float>(),
        pos0, step, n, mptr<TT>(out));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor silu_mul(const at::Tensor& gu_in) {
  const c10::cuda::CUDAGuard guard(gu_in.device());
  const auto gu = gu_in.contiguous();
  const int64_t I = gu.size(-1) / 2;
  auto sizes = gu.sizes().vec();
  sizes.back() = I;
  auto out = at::empty(sizes, gu.options());
  const int64_t n = out.numel();
  if (n == 0) return out;
  dispatch(gu, "silu_mul", [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    silu_mul_kernel<T><<<blocks(n, 256), 256, 0, at::cuda::getCurrentCUDAStream()>>>(ptr<T>(gu), I, n, mptr<T>(out));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace kvx::kernels::cuda
