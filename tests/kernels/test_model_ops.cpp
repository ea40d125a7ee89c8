// The model's fused CUDA steps (core/kernels/model_ops.h) against the ATen sequences they replace,
// on the GPU (skipped without one): RoPE and SiLU·mul elementwise with the same roundings (equal),
// RMSNorm up to its reduction's summation order (within one rounding of the dtype).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include "core/kernels/model_ops.h"

#ifdef KVX_WITH_CUDA
namespace kk = kvx::kernels;

TEST(ModelOpsCuda, MatchTheAtenSequences) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(21);
  for (auto dt : {at::kBFloat16, at::kHalf, at::kFloat}) {
    const auto opt = at::TensorOptions().device(at::kCUDA).dtype(dt);
    // RMSNorm of [2, 3, 4096] rows
    auto x = (at::randn({2, 3, 4096}) * 3).to(opt), w = (at::rand({4096}) + 0.5).to(opt);
    auto xf = x.to(at::kFloat);
    auto want = w * (xf * at::rsqrt(xf.pow(2).mean(-1, true) + 1e-5)).to(dt);
    auto got = kk::cuda::rms_norm(x, w, 1e-5);
    const double ulp = dt == at::kBFloat16 ? 1.0 / 128 : dt == at::kHalf ? 1.0 / 1024 : 1e-6;
    EXPECT_LE(((got - want).abs() / want.abs().clamp_min(1e-3)).to(at::kFloat).max().item<float>(), 2 * ulp) << dt;
    // RoPE of a strided [B, H, T, D] view, tables from position 5
    auto qkv = at::randn({2, 7, 3 * 4 * 128}).to(opt);
    auto q = qkv.narrow(-1, 0, 4 * 128).view({2, 7, 4, 128}).transpose(1, 2);
    auto pos = at::arange(64, at::kFloat).unsqueeze(1) * at::linspace(0.001, 1, 64).repeat({2}).unsqueeze(0);
    auto cos = pos.cos().cuda().contiguous(), sin = pos.sin().cuda().contiguous();
    auto c = cos.narrow(0, 5, 7).to(dt), s = sin.narrow(0, 5, 7).to(dt);
    auto rot = at::cat({-q.narrow(-1, 64, 64), q.narrow(-1, 0, 64)}, -1);
    EXPECT_TRUE(at::equal(kk::cuda::rope(q, cos, sin, 5), q * c + rot * s)) << dt;
    // SiLU·mul of the fused gate/up [2, 7, 2I]
    auto gu = (at::randn({2, 7, 2 * 1000}) * 4).to(opt);
    EXPECT_TRUE(at::equal(kk::cuda::silu_mul(gu), at::silu(gu.narrow(-1, 0, 1000)) * gu.narrow(-1, 1000, 1000))) << dt;
  }
}
#endif
