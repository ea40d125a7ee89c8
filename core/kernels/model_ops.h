// Fused elementwise steps of the Llama-family forward for CUDA tensors, one launch each where the
// ATen sequence they replace takes several (a decode step of a large model is bound by launches
// otherwise). Each computes what that sequence computes, with its roundings in the same order (the
// reductions' summation order aside); the CPU keeps the ATen sequences (core/model/llama.cpp).
//   rms_norm(x, w, eps)      w * (x_f32 * rsqrt(mean(x_f32²) + eps)).to(x.dtype)   (transformers' RMSNorm)
//   rope(x, cos, sin, pos0)  x * c + rotate_half(x) * s, c and s the fp32 tables' rows pos0.. cast
//                            to x.dtype; x [B, H, T, D] of any strides, the result contiguous; with
//                            `step` (a graph-replayed run's counter on the device) rows pos0 + *step..;
//                            the caller keeps them inside the table
//   silu_mul(gu)             silu(gu[..., :I]) * gu[..., I:] of the fused gate/up projection
#pragma once
#include <ATen/core/Tensor.h>

namespace kvx::kernels {

// Whether the fused versions run for tensors like x (a CUDA build and a CUDA tensor of a floating dtype).
bool fused_model_ops(const at::Tensor& x);

#ifdef KVX_WITH_CUDA
namespace cuda {
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps);
at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t pos0,
                const int64_t* step = nullptr);
at::Tensor silu_mul(const at::Tensor& gu);
}  // namespace cuda
#endif

}  // namespace kvx::kernels
