#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/common/error.h"
#include "experiments/kl_divergence.h"
#include "tests/protocols/test_support.h"
#include "core/common/remove_tree.h"

using namespace kvx;

namespace {
at::Tensor rows(std::vector<std::vector<double>> v) {
  at::Tensor t = at::empty({int64_t(v.size()), int64_t(v[0].size())}, at::kDouble);
  for (size_t i = 0; i < v.size(); ++i)
    for (size_t j = 0; j < v[i].size(); ++j) t[i][j] = v[i][j];
  return t;
}
// Logits whose softmax is exactly p.
at::Tensor logits_of(std::vector<std::vector<double>> p) { return rows(p).log(); }
}  // namespace

// p = [1/2, 1/2], q = [1/4, 3/4]: KL = 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3) = 0.1438410362.
TEST(KlMath, TwoPointHandComputed) {
  at::Tensor kl = kl_per_token(logits_of({{0.5, 0.5}}), logits_of({{0.25, 0.75}}));
  EXPECT_NEAR(kl[0].item<double>(), 0.5 * std::log(4.0 / 3.0), 1e-12);
  EXPECT_NEAR(kl[0].item<double>(), 0.1438410362, 1e-9);
}

// KL is not symmetric: KL(q || p) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.1308120359.
TEST(KlMath, Asymmetric) {
  at::Tensor kl = kl_per_token(logits_of({{0.25, 0.75}}), logits_of({{0.5, 0.5}}));
  EXPECT_NEAR(kl[0].item<double>(), 0.25 * std::log(0.5) + 0.75 * std::log(1.5), 1e-12);
  EXPECT_NEAR(kl[0].item<double>(), 0.1308120359, 1e-9);
}

// p = [0.7, 0.2, 0.1] against uniform logits [0, 0, 0]:
// KL = 0.7 ln 0.7 + 0.2 ln 0.2 + 0.1 ln 0.1 + ln 3 = 0.2967945...
TEST(KlMath, AgainstUniformAndShiftInvariant) {
  const double want = 0.7 * std::log(0.7) + 0.2 * std::log(0.2) + 0.1 * std::log(0.1) + std::log(3.0);
  EXPECT_NEAR(want, 0.2967945, 1e-6);
  at::Tensor ref = logits_of({{0.7, 0.2, 0.1}});
  EXPECT_NEAR(kl_per_token(ref, rows({{0, 0, 0}}))[0].item<double>(), want, 1e-12);
  // Logits are defined up to a constant per row.
  EXPECT_NEAR(kl_per_token(ref + 7.5, rows({{-3, -3, -3}}))[0].item<double>(), want, 1e-12);
  EXPECT_NEAR(kl_per_token(ref, ref)[0].item<double>(), 0.0, 1e-15);
}

// fp32 inputs are promoted: same answer to float precision of the inputs.
TEST(KlMath, Float32Inputs) {
  at::Tensor kl = kl_per_token(logits_of({{0.5, 0.5}}).to(at::kFloat), logits_of({{0.25, 0.75}}).to(at::kFloat));
  EXPECT_NEAR(kl[0].item<double>(), 0.1438410362, 1e-7);
  EXPECT_EQ(kl.scalar_type(), at::kDouble);
}

TEST(KlMath, ShapeMismatchIsAnError) {
  EXPECT_THROW(kl_per_token(rows({{0, 0}}), rows({{0, 0, 0}})), kvx::Error);
}

// Two positions over a 3-token vocabulary, next tokens 1 and 0.
//   A: p = [.5 .25 .25], q = [.25 .5 .25]  KL = .5 ln2 - .25 ln2 = .25 ln 2 = 0.1732868
//   B: p = [.7 .2 .1],   q = uniform        KL = 0.2967945
// mean 0.2350407, median (nearest rank) 0.1732868, max 0.2967945;
// top-1: A 0 vs 1 (differ), B 0 vs 0 (uniform ties -> index 0) => 0.5;
// ppl_ref = exp(-(ln .25 + ln .7)/2) = 1/sqrt(.175) = 2.3904572;
// ppl     = exp(-(ln .5 + ln 1/3)/2) = sqrt(6)       = 2.4494897;
// rms_dp  = sqrt(((.5-.25)^2 + (1/3-.7)^2)/2)       = 0.3138028.
TEST(KlMath, AccumulatorHandComputed) {
  KlAccumulator acc;
  at::Tensor ref = logits_of({{0.5, 0.25, 0.25}, {0.7, 0.2, 0.1}});
  at::Tensor got = logits_of({{0.25, 0.5, 0.25}, {1.0 / 3, 1.0 / 3, 1.0 / 3}});
  at::Tensor targets = at::tensor(std::vector<int64_t>{1, 0});
  acc.add(ref, got, targets);
  nlohmann::json m;
  acc.write(m);
  EXPECT_NEAR(m["kl_mean"].get<double>(), 0.2350407, 1e-6);
  EXPECT_NEAR(m["kl_median"].get<double>(), 0.1732868, 1e-6);
  EXPECT_NEAR(m["kl_max"].get<double>(), 0.2967945, 1e-6);
  EXPECT_DOUBLE_EQ(m["top1_agreement"].get<double>(), 0.5);
  EXPECT_NEAR(m["ppl_ref"].get<double>(), 2.3904572, 1e-6);
  EXPECT_NEAR(m["ppl"].get<double>(), 2.4494897, 1e-6);
  EXPECT_NEAR(m["rms_dp"].get<double>(), 0.3138028, 1e-6);
  EXPECT_EQ(m["tokens_scored"].get<int64_t>(), 2);
}

TEST(KlMath, NanIsARecordedFailure) {
  KlAccumulator acc;
  at::Tensor ref = rows({{0.0, 1.0}});
  at::Tensor got = rows({{NAN, 1.0}});
  acc.add(ref, got, at::tensor(std::vector<int64_t>{1}));
  nlohmann::json m;
  EXPECT_THROW(acc.write(m), kvx::Error);
}

// The protocol end to end on tiny-gpt2: the full-precision method is its own reference
// (KL exactly 0, top-1 1), and a 2-bit cache moves the distributions.
TEST(KlProtocol, FullPrecisionIsZeroAndTwoBitIsNot) {
  const nlohmann::json proto = {{"name", "kl_divergence"}, {"seq_len", 64}, {"chunk", 16}, {"max_windows", 1}};
  auto job = test::make_job("tiny-gpt2", proto, {{"key", "none"}, {"value", "none"}}, test::wikitext());
  nlohmann::json m = run_job(job, test::context());
  // Two passes of the same computation: equal up to thread-order rounding in the matmuls.
  EXPECT_LT(m["kl_mean"].get<double>(), 1e-9);
  EXPECT_DOUBLE_EQ(m["top1_agreement"].get<double>(), 1.0);
  EXPECT_EQ(m["tokens_scored"].get<int64_t>(), 63);
  EXPECT_NEAR(m["ppl"].get<double>(), m["ppl_ref"].get<double>(), 1e-6 * m["ppl_ref"].get<double>());

  auto job2 = test::make_job("tiny-gpt2", proto, parse_method_shorthand("kvq:k2v2:r0"), test::wikitext());
  nlohmann::json m2 = run_job(job2, test::context());
  EXPECT_GT(m2["kl_mean"].get<double>(), 1e-3);
  EXPECT_LT(m2["top1_agreement"].get<double>(), 1.0);
  EXPECT_EQ(m2["reference_windows_reused"].get<int64_t>(), 1);  // fp16 pass reused from the first job
  EXPECT_NEAR(m2["ppl_ref"].get<double>(), m["ppl_ref"].get<double>(), 1e-9);
}

TEST(KlProtocol, SeqLenBeyondContextIsAnError) {
  const nlohmann::json proto = {{"name", "kl_divergence"}, {"seq_len", 2048}, {"max_windows", 1}};
  auto job = test::make_job("tiny-gpt2", proto, {{"key", "none"}, {"value", "none"}}, test::wikitext());
  EXPECT_THROW(run_job(job, test::context()), kvx::Error);
}

// The full-precision references of a sweep's KL jobs are computed once: the first job writes one
// file per window to the shared folder beside the database, the next method's job reuses them all
// (whatever its batch: the batch is not part of what they depend on).
TEST(KlProtocol, ReferencesComputedOncePerSweep) {
  namespace fs = std::filesystem;
  const std::string dir = ::testing::TempDir() + "/kvx-kl-shared";
  kvx::remove_tree(dir);
  JobContext ctx = test::context();
  ctx.shared_dir = dir;
  const nlohmann::json proto = {{"name", "kl_divergence"}, {"seq_len", 24}, {"chunk", 8}, {"max_windows", 3}};
  auto first = run_job(test::make_job("tiny-gpt2", proto, parse_method_shorthand("kvq:k4v4"), test::wikitext()), ctx);
  EXPECT_EQ(first["reference_windows_computed"].get<int64_t>(), 3);
  EXPECT_EQ(first["reference_windows_reused"].get<int64_t>(), 0);
  int64_t files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.path().extension() == ".f32";
  EXPECT_EQ(files, 3);
  nlohmann::json batched = proto;
  batched["batch"] = 2;
  auto second = run_job(test::make_job("tiny-gpt2", batched, parse_method_shorthand("kvq:k2v2"), test::wikitext()), ctx);
  EXPECT_EQ(second["reference_windows_computed"].get<int64_t>(), 0);
  EXPECT_EQ(second["reference_windows_reused"].get<int64_t>(), 3);
  EXPECT_EQ(second["ppl_ref"], first["ppl_ref"]);
}
