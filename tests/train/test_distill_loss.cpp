// The distillation objective (docs/methods/protocols.md, "Distillation training") on hand-computed
// tiny logits.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/common/error.h"
#include "experiments/distill_train.h"

namespace {

at::Tensor t2(std::vector<float> v, int64_t rows) {
  return at::tensor(v, at::kFloat).view({rows, int64_t(v.size()) / rows});
}

// Two positions, V = 3, T = 2, λ = 0.5.
//   MLE: pos 0 student [1,0,0], target 0: log(1 + 2/e) = 0.551444;
//        pos 1 student [0,2,0], target 1: log(1 + 2/e²) = 0.239545;  mean 0.395495.
//   KL(softmax(t/2) ‖ softmax(s/2)), per position, mean over positions = 0.056835.
//   total = 0.395495 + 0.5 · 4 · 0.056835 = 0.509165.
TEST(DistillLoss, MatchesHandComputedExample) {
  at::Tensor s = t2({1, 0, 0, 0, 2, 0}, 2), t = t2({0, 1, 0, 0, 2, 1}, 2);
  at::Tensor y = at::tensor(std::vector<int64_t>{0, 1}, at::kLong);
  kvx::DistillLoss l = kvx::distillation_loss(s, t, y, 2.0, 0.5);
  EXPECT_NEAR(l.mle.item<double>(), 0.3954947400769679, 1e-6);
  EXPECT_NEAR(std::log1p(2 / std::exp(1.0)) / 2 + std::log1p(2 / std::exp(2.0)) / 2, 0.3954947400769679, 1e-12);
  EXPECT_NEAR(l.kl.item<double>(), 0.05683502877888508, 1e-6);
  EXPECT_NEAR(l.total.item<double>(), 0.509164797634738, 1e-6);
}

TEST(DistillLoss, KlIsAPerTokenMeanAndScalesWithTemperatureSquared) {
  at::Tensor s = t2({1, 0, 0}, 1), t = t2({0, 1, 0}, 1);
  at::Tensor y = at::tensor(std::vector<int64_t>{0}, at::kLong);
  kvx::DistillLoss one = kvx::distillation_loss(s, t, y, 2.0, 0.5);
  // The same position twice (batched [2, 1, V]): the mean, not the sum.
  kvx::DistillLoss two = kvx::distillation_loss(at::cat({s, s}).view({2, 1, 3}), at::cat({t, t}).view({2, 1, 3}),
                                                at::cat({y, y}).view({2, 1}), 2.0, 0.5);
  EXPECT_NEAR(two.kl.item<double>(), one.kl.item<double>(), 1e-7);
  EXPECT_NEAR(two.total.item<double>(), one.total.item<double>(), 1e-7);
  // λ·T² weighting: total - mle = λ T² KL.
  kvx::DistillLoss t4 = kvx::distillation_loss(s, t, y, 4.0, 1.0);
  EXPECT_NEAR(t4.total.item<double>() - t4.mle.item<double>(), 16.0 * t4.kl.item<double>(), 1e-6);
  // Identical distributions: no KL.
  EXPECT_NEAR(kvx::distillation_loss(s, s, y, 2.0, 0.5).kl.item<double>(), 0.0, 1e-7);
}

TEST(DistillLoss, GradientReachesTheStudentOnly) {
  at::Tensor s = t2({1, 0, 0, 0, 2, 0}, 2).requires_grad_(true);
  at::Tensor t = t2({0, 1, 0, 0, 2, 1}, 2).requires_grad_(true);
  at::Tensor y = at::tensor(std::vector<int64_t>{0, 1}, at::kLong);
  kvx::distillation_loss(s, t, y, 2.0, 0.5).total.backward();
  ASSERT_TRUE(s.grad().defined());
  EXPECT_GT(s.grad().abs().sum().item<double>(), 0.0);
  EXPECT_FALSE(t.grad().defined());
}

TEST(DistillLoss, RejectsMismatchedShapes) {
  at::Tensor y = at::tensor(std::vector<int64_t>{0}, at::kLong);
  EXPECT_THROW(kvx::distillation_loss(at::zeros({1, 3}), at::zeros({1, 4}), y, 2.0, 0.5), kvx::Error);
  EXPECT_THROW(kvx::distillation_loss(at::zeros({1, 3}), at::zeros({1, 3}), y, 0.0, 0.5), kvx::Error);
}

}  // namespace
