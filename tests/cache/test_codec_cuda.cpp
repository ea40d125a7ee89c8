// The codecs' CUDA paths (core/cache/codec_cuda.h) against their CPU code, which the worked
// examples of test_quantizers_math.cpp pin down: the same packed bytes, metadata and dequantized
// values, bit for bit, for every width, both groupings, groups that do not divide the axis,
// constant groups and each input / metadata dtype (skipped without CUDA).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>

#include "core/cache/affine_quantizer.h"
#include "core/cache/int8_absmax.h"

namespace {

// Channels spread over two decades (per-channel groups see different ranges), odd token count,
// one constant token and one constant channel run (s == 0).
at::Tensor sample(int64_t N, int64_t D, at::ScalarType dt) {
  auto x = at::randn({2, 3, N, D}) * at::linspace(0.1, 10, D);
  x[1][2][5].fill_(0.75);
  x[0][1].narrow(0, 0, 40).select(1, 3).fill_(-2.0);
  return x.to(dt);
}

}  // namespace

TEST(AffineCodecCuda, MatchesCpuBitForBit) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(21);
  int cases = 0;
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf})
    for (auto meta : {at::kHalf, at::kBFloat16})
      for (auto axis : {kvx::GroupAxis::Token, kvx::GroupAxis::Channel})
        for (int bits : {1, 2, 3, 4, 8})
          for (int64_t group : {32, 48, 64, 200}) {
            const auto x = sample(77, 128, dt);
            const auto c = kvx::affine_quantize(x.cuda(), bits, group, axis, meta);
            const auto r = kvx::affine_quantize(x, bits, group, axis, meta);
            const std::string what = fmt::format("dtype {} meta {} axis {} bits {} group {}", c10::toString(dt),
                                                 c10::toString(meta), axis == kvx::GroupAxis::Token ? "token" : "channel",
                                                 bits, group);
            ASSERT_TRUE(c.codes.is_cuda()) << what;
            EXPECT_TRUE(at::equal(c.codes.cpu(), r.codes)) << what;
            EXPECT_TRUE(at::equal(c.scale.cpu(), r.scale)) << what;
            EXPECT_TRUE(at::equal(c.shift.cpu(), r.shift)) << what;
            for (auto out : {at::kFloat, dt})
              EXPECT_TRUE(at::equal(kvx::affine_dequantize(c, out).cpu(), kvx::affine_dequantize(r, out))) << what;
            ++cases;
          }
  EXPECT_EQ(cases, 240);
}

TEST(Int8CodecCuda, MatchesCpuBitForBit) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(13);
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
    auto x = (at::randn({2, 4, 301, 128}) * at::linspace(0.1, 10, 128)).to(dt);
    x[1][2][7].zero_();
    auto c = kvx::int8_quantize(x.cuda());
    auto r = kvx::int8_quantize(x);
    ASSERT_TRUE(c.codes.is_cuda());
    EXPECT_TRUE(at::equal(c.codes.cpu(), r.codes)) << dt;
    EXPECT_TRUE(at::equal(c.scale.cpu(), r.scale)) << dt;
    EXPECT_TRUE(at::equal(kvx::int8_dequantize(c, at::kFloat).cpu(), kvx::int8_dequantize(r, at::kFloat))) << dt;
  }
}
