// RoPE: rotation by hand-computed angles, inverse undoes apply, llama3 frequency scaling.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/model/rope.h"

namespace kvx {
namespace {

TEST(Rope, RotatesPairsKAndKPlusHalfByPosTimesFreq) {
  RopeConfig cfg;  // theta 10000, D = 4: inv_freq = [1, 0.01]
  Rope rope(4, cfg, 16, at::kCPU);
  at::Tensor x = at::tensor({1.0f, 0.0f, 0.0f, 2.0f}).view({1, 1, 1, 4});
  at::Tensor y = rope.apply(x, at::tensor({int64_t(3)}), false).view({4});
  // pair (0,2) rotated by 3 rad, pair (1,3) by 0.03 rad: (a, b) -> (a cos - b sin, a sin + b cos)
  EXPECT_NEAR(y[0].item<float>(), std::cos(3.0), 1e-6);
  EXPECT_NEAR(y[2].item<float>(), std::sin(3.0), 1e-6);
  EXPECT_NEAR(y[1].item<float>(), -2 * std::sin(0.03), 1e-6);
  EXPECT_NEAR(y[3].item<float>(), 2 * std::cos(0.03), 1e-6);
  // apply_range uses the tables; same numbers.
  at::Tensor z = rope.apply_range(x, 3).view({4});
  EXPECT_TRUE(at::allclose(y, z, 1e-6, 1e-6));
}

TEST(Rope, InverseUndoesApplyAtAnyPosition) {
  RopeConfig cfg;
  cfg.theta = 500000;
  Rope rope(64, cfg, 128, at::kCPU);
  at::manual_seed(1);
  at::Tensor x = at::randn({2, 3, 5, 64});
  at::Tensor pos = at::tensor(std::vector<int64_t>{0, 7, 100, 127, 4000});  // 4000 is past the table
  at::Tensor y = rope.apply(x, pos, false);
  EXPECT_GT((y - x).abs().max().item<float>(), 0.1f);
  at::Tensor back = rope.apply(y, pos, true);
  EXPECT_LT((back - x).abs().max().item<float>(), 1e-4f);
  EXPECT_TRUE(at::allclose(rope.apply_range(x.narrow(2, 0, 1), 0), x.narrow(2, 0, 1)));
}

TEST(Rope, Llama3ScalingMatchesHandComputedFrequencies) {
  RopeConfig cfg;
  cfg.type = "llama3";
  cfg.factor = 8;
  cfg.low_freq_factor = 1;
  cfg.high_freq_factor = 4;
  cfg.original_max_positions = 1024;
  at::Tensor f = rope_inv_freq(8, cfg);  // unscaled [1, 0.1, 0.01, 0.001]
  ASSERT_EQ(f.numel(), 4);
  // wavelengths 2*pi/f = 6.28, 62.8 (< 1024/4: kept), 628.3 (between: smoothed), 6283 (> 1024: /8)
  EXPECT_NEAR(f[0].item<float>(), 1.0, 1e-6);
  EXPECT_NEAR(f[1].item<float>(), 0.1, 1e-7);
  EXPECT_NEAR(f[2].item<float>(), 0.003086760967, 1e-8);
  EXPECT_NEAR(f[3].item<float>(), 0.000125, 1e-9);
  cfg.type = "linear";
  cfg.factor = 4;
  EXPECT_NEAR(rope_inv_freq(8, cfg)[1].item<float>(), 0.025, 1e-8);
}

}  // namespace
}  // namespace kvx
