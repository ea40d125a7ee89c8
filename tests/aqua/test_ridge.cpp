// Ridge predictor fit against the worked examples of docs/methods/aqua_kv.md ("Calibration").
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/higgs/ridge.h"

using namespace kvx::higgs;

TEST(Ridge, WorkedExampleWithoutDamping) {
  auto X = at::tensor({0.f, 1.f, 2.f, 3.f}).reshape({4, 1});
  auto Y = at::tensor({1.f, 3.f, 5.f, 7.2f}).reshape({4, 1});
  auto f = ridge_fit(X, Y, 0.0);
  EXPECT_NEAR(f.weight[0][0].item<float>(), 2.06, 1e-5);
  EXPECT_NEAR(f.bias[0].item<float>(), 0.96, 1e-5);
  auto res = (f.apply(X) - Y).reshape({4});
  const float want[4] = {-0.04f, 0.02f, 0.08f, -0.06f};  // f(X) − Y, as the page lists them
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(res[i].item<float>(), want[i], 1e-5);
  const double r = rel_mse(f.apply(X), Y);
  EXPECT_NEAR(r, 1.3819e-4, 1e-8);
  EXPECT_NEAR(equivalent_bits(r), 6.411, 1e-3);
}

TEST(Ridge, WorkedExampleDampingHitsTheInterceptToo) {
  auto X = at::tensor({0.f, 1.f, 2.f, 3.f}).reshape({4, 1});
  auto Y = at::tensor({1.f, 3.f, 5.f, 7.2f}).reshape({4, 1});
  auto f = ridge_fit(X, Y, 1e-3);
  EXPECT_NEAR(f.weight[0][0].item<float>(), 2.058885, 2e-6);
  EXPECT_NEAR(f.bias[0].item<float>(), 0.959514, 2e-6);
  EXPECT_NEAR(rel_mse(f.apply(X), Y), 1.3847e-4, 1e-8);
}

TEST(Ridge, ChunkedAccumulationEqualsOneShot) {
  at::manual_seed(0);
  auto X = at::randn({9000, 5}), Y = at::randn({9000, 3});
  RidgeAccumulator acc(5, 3);
  acc.add(X.narrow(0, 0, 5000), Y.narrow(0, 0, 5000));
  acc.add(X.narrow(0, 5000, 4000), Y.narrow(0, 5000, 4000));
  auto a = acc.solve(1e-3), b = ridge_fit(X, Y, 1e-3);
  EXPECT_TRUE(at::allclose(a.weight, b.weight, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(a.bias, b.bias, 1e-5, 1e-6));
}
