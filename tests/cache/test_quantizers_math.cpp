// The affine min-max quantizer and int8 absmax against the worked examples of
// docs/methods/kvq.md and docs/methods/selective_int8.md, and against an independent slow
// reference of the group statistics.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/cache/affine_quantizer.h"
#include "core/cache/int8_absmax.h"

namespace {

using kvx::GroupAxis;

std::vector<float> flat(const at::Tensor& t) {
  auto c = t.to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}
std::vector<int> flat_codes(const at::Tensor& t) {
  auto c = t.to(at::kInt).contiguous();
  return std::vector<int>(c.data_ptr<int>(), c.data_ptr<int>() + c.numel());
}

const std::vector<float> kX = {0.10f, -0.50f, 0.90f, 0.30f, 2.00f, 1.00f, -1.00f, 0.45f};

TEST(AffineWorkedExample, PerTokenFourBits) {
  auto x = at::tensor(kX).view({1, 1, 1, 8});
  auto blk = kvx::affine_quantize(x, 4, 4, GroupAxis::Token, at::kHalf);
  EXPECT_EQ(flat_codes(kvx::affine_codes(blk)), (std::vector<int>{6, 0, 15, 9, 15, 10, 0, 7}));
  const std::vector<float> want = {0.06f, -0.50f, 0.90f, 0.34f, 2.0f, 1.0f, -1.0f, 0.40f};
  auto got = flat(kvx::affine_dequantize(blk, at::kFloat));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-3) << i;
  auto s = flat(blk.scale), z = flat(blk.shift);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_NEAR(s[0], 1.4 / 15, 1e-4);
  EXPECT_NEAR(z[0], 0.5, 1e-6);
  EXPECT_NEAR(s[1], 0.2, 1e-4);
  EXPECT_NEAR(z[1], 1.0, 1e-6);
  EXPECT_EQ(blk.scale.scalar_type(), at::kHalf);
  EXPECT_EQ(blk.codes.numel(), 4);  // 8 codes × 4 bits
}

TEST(AffineWorkedExample, PerTokenTwoBits) {
  auto x = at::tensor(kX).view({1, 1, 1, 8});
  auto blk = kvx::affine_quantize(x, 2, 4, GroupAxis::Token, at::kHalf);
  EXPECT_EQ(flat_codes(kvx::affine_codes(blk)), (std::vector<int>{1, 0, 3, 2, 3, 2, 0, 1}));
  const std::vector<float> want = {-0.033333f, -0.5f, 0.9f, 0.433333f, 2.f, 1.f, -1.f, 0.f};
  auto got = flat(kvx::affine_dequantize(blk, at::kFloat));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-3) << i;
  EXPECT_NEAR(flat(blk.scale)[0], 0.4666667, 3e-4);
  EXPECT_EQ(blk.codes.numel(), 2);
}

TEST(AffineWorkedExample, PerChannelTwoBits) {
  // one head, 4 tokens × 2 channels: channel 0 = [1, 2, 3, 4], channel 1 = [-1, 0.5, 0.2, 0]
  auto x = at::tensor(std::vector<float>{1, -1, 2, 0.5f, 3, 0.2f, 4, 0}).view({1, 1, 4, 2});
  auto blk = kvx::affine_quantize(x, 2, 4, GroupAxis::Channel, at::kHalf);
  EXPECT_EQ(flat_codes(kvx::affine_codes(blk)), (std::vector<int>{0, 0, 1, 3, 2, 2, 3, 2}));
  const std::vector<float> want = {1, -1, 2, 0.5f, 3, 0, 4, 0};
  auto got = flat(kvx::affine_dequantize(blk, at::kFloat));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-3) << i;
  EXPECT_EQ(flat(blk.scale), (std::vector<float>{1.f, 0.5f}));
  EXPECT_EQ(flat(blk.shift), (std::vector<float>{-1.f, 1.f}));
}

TEST(AffineQuantizer, ConstantGroupStoresZeroCodes) {
  auto x = at::full({1, 1, 2, 4}, 0.75f);
  auto blk = kvx::affine_quantize(x, 3, 4, GroupAxis::Token, at::kHalf);
  for (int c : flat_codes(kvx::affine_codes(blk))) EXPECT_EQ(c, 0);
  for (float v : flat(kvx::affine_dequantize(blk, at::kFloat))) EXPECT_EQ(v, 0.75f);
}

// Independent reference of the grouping (4.3 + kvx resolutions) and the per-element bound
// |x - x̂| <= s/2, plus the rounding of s and z to fp16 storage.
void check_bound(int bits, int64_t group, GroupAxis axis, at::ScalarType meta) {
  const int64_t B = 2, H = 3, N = 37, D = 40;
  at::manual_seed(bits * 100 + group);
  auto x = at::randn({B, H, N, D}) * 3 + at::rand({B, H, N, 1}) * 4;
  auto blk = kvx::affine_quantize(x, bits, group, axis, meta);
  auto xh = flat(kvx::affine_dequantize(blk, at::kFloat));
  auto xv = flat(x);
  const double qmax = (1 << bits) - 1;
  const double ulp = meta == at::kHalf ? std::ldexp(1.0, -10) : std::ldexp(1.0, -7);
  // group id of element (bh, t, d), computed independently
  const bool tok = axis == GroupAxis::Token;
  const int64_t Gt = std::min(group, D);
  const int64_t ngd = (D + Gt - 1) / Gt, ngt = (N + group - 1) / group;
  const int64_t ngroups = tok ? B * H * N * ngd : B * H * ngt * D;
  EXPECT_EQ(blk.groups(), ngroups);
  EXPECT_EQ(blk.code_bits(), (B * H * N * D * bits + 7) / 8 * 8);
  std::vector<double> mn(size_t(ngroups), 1e300), mx(size_t(ngroups), -1e300);
  auto gid = [&](int64_t bh, int64_t t, int64_t d) {
    return tok ? (bh * N + t) * ngd + d / Gt : (bh * ngt + t / group) * D + d;
  };
  for (int64_t bh = 0; bh < B * H; ++bh)
    for (int64_t t = 0; t < N; ++t)
      for (int64_t d = 0; d < D; ++d) {
        const double v = xv[size_t((bh * N + t) * D + d)];
        const int64_t g = gid(bh, t, d);
        mn[size_t(g)] = std::min(mn[size_t(g)], v);
        mx[size_t(g)] = std::max(mx[size_t(g)], v);
      }
  auto sv = flat(blk.scale);
  int64_t worst = 0;
  double worst_ratio = 0;
  for (int64_t bh = 0; bh < B * H; ++bh)
    for (int64_t t = 0; t < N; ++t)
      for (int64_t d = 0; d < D; ++d) {
        const int64_t i = (bh * N + t) * D + d, g = gid(bh, t, d);
        const double s = (mx[size_t(g)] - mn[size_t(g)]) / qmax;
        ASSERT_NEAR(sv[size_t(g)], s, s * ulp + 1e-7) << "scale of group " << g;
        const double bound = s / 2 + (qmax * s + std::fabs(mn[size_t(g)])) * ulp + 1e-6;
        const double err = std::fabs(xv[size_t(i)] - xh[size_t(i)]);
        if (err / bound > worst_ratio) worst_ratio = err / bound, worst = i;
        ASSERT_LE(err, bound) << "bits " << bits << " group " << group << " element " << i;
      }
  (void)worst;
}

TEST(AffineQuantizer, ErrorWithinHalfScalePerElement) {
  for (int bits : {1, 2, 3, 4, 8})
    for (int64_t group : {16, 24, 64})  // 24: shorter last group; 64 > D: clamps to D for tokens
      for (auto axis : {GroupAxis::Token, GroupAxis::Channel}) check_bound(bits, group, axis, at::kHalf);
  check_bound(4, 32, GroupAxis::Token, at::kBFloat16);
}

TEST(Int8Absmax, WorkedExample) {
  auto x = at::tensor(std::vector<float>{0.617f, -2.54f, 0.013f, 1.3f}).view({1, 1, 1, 4});
  auto blk = kvx::int8_quantize(x);
  EXPECT_EQ(flat_codes(blk.codes), (std::vector<int>{31, -127, 1, 65}));
  EXPECT_NEAR(flat(blk.scale)[0], 0.02, 1e-7);
  const std::vector<float> want = {0.62f, -2.54f, 0.02f, 1.30f};
  auto got = flat(kvx::int8_dequantize(blk, at::kFloat));
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << i;
  EXPECT_EQ(blk.code_bits() + blk.scale_bits(), 4 * 8 + 32);
}

TEST(Int8Absmax, AllZeroVectorUsesFloor) {
  auto blk = kvx::int8_quantize(at::zeros({1, 1, 1, 4}));
  EXPECT_NEAR(flat(blk.scale)[0], 1e-8 / 127, 1e-15);
  for (float v : flat(kvx::int8_dequantize(blk, at::kFloat))) EXPECT_EQ(v, 0.f);
}

}  // namespace
