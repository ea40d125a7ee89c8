// The adaptive policy (quantizers/attention_prune.h, kmeans.h) and h2o against hand-computed
// numbers: the worked example of docs/methods/attention_prune.md (batch, eta 0.5 and 0.01), the
// sequential k-means form, the prune trigger (since_prune >= P and N > B), ties to the more
// recent entry, true positions of kept (RoPE-rotated) keys, real memory release.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "quantizers/attention_prune.h"
#include "quantizers/h2o.h"
#include "quantizers/kmeans.h"
#include "quantizers/registry.h"

namespace {

using json = nlohmann::json;

kvx::ModelInfo model(int64_t L, int64_t Hq, int64_t Hkv, int64_t D) {
  kvx::ModelInfo m;
  m.n_layers = L;
  m.n_heads = Hq;
  m.n_kv_heads = Hkv;
  m.head_dim = D;
  return m;
}

at::Tensor t2(std::vector<float> v, int64_t n, int64_t d) {
  return at::tensor(v, at::kFloat).view({1, 1, n, d});
}

void expect_vec(const at::Tensor& t, std::vector<double> want, double tol = 1e-6) {
  auto f = t.to(at::kDouble).contiguous().view({-1});
  ASSERT_EQ(f.numel(), int64_t(want.size()));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(f[int64_t(i)].item<double>(), want[i], tol) << "at " << i;
}

std::vector<int64_t> ivec(const at::Tensor& t) {
  auto c = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// Worked-example data: keys/values of 6 entries (entries 1, 3, 4 are dropped, values arbitrary).
const std::vector<float> kK = {1, 0, 9, 9, 0.8f, 0.2f, 9, 9, 9, 9, 0, 1};
const std::vector<float> kV = {1, 0, 7, 7, 0, 1, 7, 7, 7, 7, 2, 2};
// The two lookback rows (the last Δ = 2 query rows of a 6-token chunk).
at::Tensor probs58() {
  auto p = at::zeros({1, 1, 6, 6});
  p[0][0][4] = at::tensor(std::vector<float>{0.40f, 0.05f, 0.20f, 0.05f, 0.10f, 0.20f});
  p[0][0][5] = at::tensor(std::vector<float>{0.30f, 0.10f, 0.25f, 0.05f, 0.08f, 0.22f});
  p[0][0][0] = at::tensor(std::vector<float>{5, 5, 0, 0, 0, 0});  // outside the lookback: ignored
  return p;
}

// Feeds one 6-token chunk through the single layer with the worked example's attention rows, returns the
// next step's attention inputs (one more token at position 6).
kvx::AttnInputs run58(double eta, bool sequential, int64_t K, double* bits_before = nullptr,
                      kvx::MemoryReport* after = nullptr) {
  kvx::AttentionPruneConfig c;
  c.max_cache_size = 3;
  c.num_clusters = K;
  c.pruning_interval = 6;
  c.lookback_window = 2;
  c.learning_rate = eta;
  c.sequential = sequential;
  c.init_indices = {0, 1};  // kept entries 0 and 2 (positions in the kept list)
  auto p = kvx::make_attention_prune_policy(c);
  const auto m = model(1, 1, 1, 2);
  p->reset(m, 1);
  kvx::StepInfo s{0, 6, nullptr};
  auto in = p->update(0, t2(kK, 6, 2), t2(kV, 6, 2), s);
  EXPECT_EQ(in.k.size(2), 6);
  p->observe_attention(0, probs58(), s);
  if (bits_before) *bits_before = double(p->memory().device_bits());
  p->end_step(s);
  if (after) *after = p->memory();
  kvx::StepInfo s2{6, 1, nullptr};
  return p->update(0, t2({5, 5}, 1, 2), t2({6, 6}, 1, 2), s2);
}

TEST(AttentionPrune, WorkedExample58PruneOnlyKeeps025) {
  auto in = run58(0.5, false, /*K >= B: no clustering*/ 3);
  EXPECT_EQ(ivec(in.key_pos), (std::vector<int64_t>{0, 2, 5, 6}));
  expect_vec(in.k, {1, 0, 0.8, 0.2, 0, 1, 5, 5});
  expect_vec(in.v, {1, 0, 0, 1, 2, 2, 6, 6});
  EXPECT_EQ(in.n_cached, 3);
}

TEST(AttentionPrune, WorkedExample58BatchEtaHalf) {
  double before = 0;
  kvx::MemoryReport r;
  auto in = run58(0.5, false, 2, &before, &r);
  EXPECT_EQ(ivec(in.key_pos), (std::vector<int64_t>{-1, -1, 6}));
  expect_vec(in.k, {1, 0, 0.6, 0.4, 5, 5});
  expect_vec(in.v, {1, 0, 0.5, 1.25, 6, 6});
  // 6 entries held before, 2 centroids after: 16 bits x 2 (K,V) x D=2 per entry
  EXPECT_EQ(before, 6 * 2 * 2 * 16);
  EXPECT_EQ(r.device_bits(), 2 * 2 * 2 * 16);
  EXPECT_EQ(r.tokens_kept, 2);
  EXPECT_EQ(r.tokens_seen, 6);
}

TEST(AttentionPrune, WorkedExample58BatchDefaultEta) {
  auto in = run58(0.01, false, 2);
  expect_vec(in.k.narrow(2, 0, 2), {1, 0, 0.796, 0.204});
  expect_vec(in.v.narrow(2, 0, 2), {1, 0, 0.01, 1.005});
}

TEST(AttentionPrune, SequentialKMeansHandComputed) {
  // per vector in cache order: k0 -> c0 (mu0 stays), k2 -> c1 (mu1 stays, nu1 stays),
  // k5 -> c1 (1.28 < 2.0): mu1 = 0.5 (0.8,0.2) + 0.5 (0,1) = (0.4,0.6); nu1 = 0.5 (0,1) + 0.5 (2,2) = (1,1.5)
  auto in = run58(0.5, true, 2);
  expect_vec(in.k.narrow(2, 0, 2), {1, 0, 0.4, 0.6});
  expect_vec(in.v.narrow(2, 0, 2), {1, 0, 1, 1.5});
  // eta 0.01: mu1 = 0.99 (0.8,0.2) + 0.01 (0,1) = (0.792, 0.208); nu1 = (0.02, 1.01)
  auto in2 = run58(0.01, true, 2);
  expect_vec(in2.k.narrow(2, 0, 2), {1, 0, 0.792, 0.208});
  expect_vec(in2.v.narrow(2, 0, 2), {1, 0, 0.02, 1.01});
}

TEST(KMeans, UpdateFunctionBatchAndAssignment) {
  at::Tensor mu = t2({1, 0, 0.8f, 0.2f}, 2, 2), nu = t2({1, 0, 0, 1}, 2, 2);
  auto a = kvx::kmeans_update(mu, nu, t2({1, 0, 0.8f, 0.2f, 0, 1}, 3, 2), t2({1, 0, 0, 1, 2, 2}, 3, 2), 0.5, false);
  EXPECT_EQ(ivec(a), (std::vector<int64_t>{0, 1, 1}));
  expect_vec(mu, {1, 0, 0.6, 0.4});
  expect_vec(nu, {1, 0, 0.5, 1.25});
}

TEST(KMeans, InitIndicesDistinctAndSeeded) {
  auto a = kvx::kmeans_init_indices(100, 30, 7), b = kvx::kmeans_init_indices(100, 30, 7);
  EXPECT_EQ(a, b);
  std::sort(a.begin(), a.end());
  EXPECT_EQ(std::unique(a.begin(), a.end()), a.end());
  EXPECT_NE(kvx::kmeans_init_indices(100, 30, 8), b);
}

// Feeds single tokens with uniform attention over what is visible; returns layer-0 inputs.
struct Driver {
  std::unique_ptr<kvx::KVCachePolicy> p;
  kvx::ModelInfo m;
  int64_t pos = 0;
  kvx::AttnInputs step(const at::Tensor& k, const at::Tensor& v, const at::Tensor& probs_row /*[N]*/ = {}) {
    const int64_t n = k.size(2);
    kvx::StepInfo s{pos, n, nullptr};
    kvx::AttnInputs first;
    for (int l = 0; l < m.n_layers; ++l) {
      auto in = p->update(l, k, v, s);
      if (l == 0) first = in;
      if (p->wants_attention()) {
        const int64_t N = in.k.size(2);
        at::Tensor pr = probs_row.defined() ? probs_row.view({1, 1, 1, N}).expand({1, m.n_heads, n, N}).contiguous()
                                            : at::full({1, m.n_heads, n, N}, 1.0 / double(N));
        p->observe_attention(l, pr, s);
      }
    }
    p->end_step(s);
    pos += n;
    return first;
  }
};

TEST(AttentionPrune, TriggerNeedsIntervalAndOverflow) {
  kvx::AttentionPruneConfig c;
  c.max_cache_size = 4;
  c.num_clusters = 4;  // pruning only
  c.pruning_interval = 3;
  c.lookback_window = 1;
  Driver d{kvx::make_attention_prune_policy(c), model(2, 2, 1, 2)};
  d.p->reset(d.m, 1);
  auto one = [](float x) { return at::full({1, 1, 1, 2}, x); };
  // tokens 0..3: N reaches 4 = B at step 4, since_prune = 4 >= 3 but N > B fails -> no prune
  for (int i = 0; i < 4; ++i) d.step(one(float(i)), one(float(i)));
  EXPECT_EQ(d.p->memory().tokens_kept, 4);
  // token 4: N = 5 > B and since_prune = 5 >= 3 -> prune to 4
  d.step(one(4), one(4));
  EXPECT_EQ(d.p->memory().tokens_kept, 4);
  // tokens 5, 6: N = 6 > B, since_prune = 2 < 3 -> no prune
  d.step(one(5), one(5));
  d.step(one(6), one(6));
  EXPECT_EQ(d.p->memory().tokens_kept, 6);
  EXPECT_EQ(d.p->memory().device_bits(), 2 /*layers*/ * 2 /*K,V*/ * 6 * 2 * 16);
  d.step(one(7), one(7));  // since_prune = 3 -> prune
  EXPECT_EQ(d.p->memory().tokens_kept, 4);
}

TEST(AttentionPrune, TiesGoToMoreRecentAndPositionsAreKept) {
  kvx::AttentionPruneConfig c;
  c.max_cache_size = 3;
  c.num_clusters = 3;
  c.pruning_interval = 5;
  c.lookback_window = 1;
  Driver d{kvx::make_attention_prune_policy(c), model(1, 1, 1, 2)};
  d.p->reset(d.m, 1);
  // RoPE-rotated keys are opaque to the policy: token i carries key (i, -i)
  auto kt = [](int64_t i) { return at::tensor(std::vector<float>{float(i), float(-i)}).view({1, 1, 1, 2}); };
  for (int i = 0; i < 4; ++i) d.step(kt(i), kt(i));
  // token 4: the only lookback row gives entries 0..4 scores (0.3, 0.1, 0.1, 0.1, 0.4):
  // keep 4 and 0, then the tie among 1, 2, 3 goes to the most recent: 3
  d.step(kt(4), kt(4), at::tensor(std::vector<float>{0.3f, 0.1f, 0.1f, 0.1f, 0.4f}));
  auto in = d.step(kt(5), kt(5));
  EXPECT_EQ(ivec(in.key_pos), (std::vector<int64_t>{0, 3, 4, 5}));
  expect_vec(in.k, {0, 0, 3, -3, 4, -4, 5, -5});  // keys unchanged (original rotation), new at pos 5
}

TEST(AttentionPrune, LookbackUsesOnlyLastRows) {
  kvx::AttentionPruneConfig c;
  c.max_cache_size = 2;
  c.num_clusters = 2;
  c.pruning_interval = 4;
  c.lookback_window = 2;
  Driver d{kvx::make_attention_prune_policy(c), model(2, 1, 1, 1)};
  d.p->reset(d.m, 1);
  auto one = [](float x) { return at::full({1, 1, 1, 1}, x); };
  d.step(one(0), one(0));
  d.step(one(1), one(1), at::tensor(std::vector<float>{0.0f, 1.0f}));     // dropped from lookback later
  d.step(one(2), one(2), at::tensor(std::vector<float>{0.5f, 0.0f, 0.5f}));
  auto in = d.step(one(3), one(3), at::tensor(std::vector<float>{0.5f, 0.0f, 0.0f, 0.5f}));
  // prune after token 3 (since_prune 4 >= 4, N 4 > 2) over the last Δ = 2 rows, 2 layers each:
  // I = 2*((0.5,0,0.5) + (0.5,0,0,0.5)) = (2, 0, 1, 1); the row giving entry 1 a score of 1 is
  // older than Δ. Keep 0 and, of the tie 2 vs 3, the more recent 3.
  in = d.step(one(4), one(4));
  EXPECT_EQ(ivec(in.key_pos), (std::vector<int64_t>{0, 3, 4}));
}

TEST(AttentionPrune, RegistryDefaultsAndErrors) {
  auto r = kvx::resolve_method(json{{"policy", {{"type", "attention_prune"}}}});
  EXPECT_EQ(r["policy"]["max_cache_size"], 1024);
  EXPECT_EQ(r["policy"]["num_clusters"], 256);
  EXPECT_EQ(r["policy"]["pruning_interval"], 512);
  EXPECT_EQ(r["policy"]["lookback_window"], 256);
  EXPECT_DOUBLE_EQ(r["policy"]["kmeans_learning_rate"].get<double>(), 0.01);
  EXPECT_EQ(r["policy"]["kmeans_sequential"], false);
  EXPECT_THROW(kvx::resolve_method(json{{"policy", {{"type", "attention_prune"}, {"max_cache_size", 0}}}}),
               kvx::ParamError);
  EXPECT_THROW(kvx::resolve_method(json{{"policy", {{"type", "attention_prune"}, {"kmeans_learning_rate", 2.0}}}}),
               kvx::ParamError);
  EXPECT_THROW(kvx::resolve_method(json{{"policy", {{"type", "kmeans_cluster"}, {"num_clusters", 1024}}}}),
               kvx::ParamError);
  EXPECT_THROW(kvx::resolve_method(json{{"policy", {{"type", "h2o"}, {"recent", 0}}}}), kvx::ParamError);
  EXPECT_NO_THROW(kvx::make_policy(kvx::resolve_method(json{{"policy", {{"type", "kmeans_cluster"}}}})));
}

TEST(H2O, WorkedExampleHeavyOneRecentOne) {
  Driver d{kvx::make_policy(kvx::resolve_method(json{{"policy", {{"type", "h2o"}, {"heavy", 1}, {"recent", 1}}}})),
           model(1, 1, 1, 1)};
  d.p->reset(d.m, 1);
  auto one = [](float x) { return at::full({1, 1, 1, 1}, x); };
  d.step(one(0), one(0), at::tensor(std::vector<float>{1.0f}));
  d.step(one(1), one(1), at::tensor(std::vector<float>{0.6f, 0.4f}));
  d.step(one(2), one(2), at::tensor(std::vector<float>{0.5f, 0.2f, 0.3f}));  // scores (2.1, 0.6, 0.3)
  auto in = d.step(one(3), one(3));
  EXPECT_EQ(ivec(in.head_pos), (std::vector<int64_t>{0, 2, 3}));
  expect_vec(in.k, {0, 2, 3});
  EXPECT_EQ(d.p->memory().tokens_kept, 2);
  EXPECT_EQ(d.p->memory().device_bits(), 2 * 2 * 16);
}

TEST(H2O, HeadsKeepDifferentPositions) {
  // 2 query heads, 2 KV heads; head 0 attends entry 0, head 1 entry 1; heavy 1 recent 1
  Driver d{kvx::make_policy(kvx::resolve_method(json{{"policy", {{"type", "h2o"}, {"heavy", 1}, {"recent", 1}}}})),
           model(1, 2, 2, 1)};
  d.p->reset(d.m, 1);
  kvx::StepInfo s{0, 3, nullptr};
  auto k = at::arange(6, at::kFloat).view({1, 2, 3, 1});
  auto in = d.p->update(0, k, k, s);
  auto pr = at::zeros({1, 2, 3, 3});
  pr[0][0][2][0] = 1;
  pr[0][1][2][1] = 1;
  d.p->observe_attention(0, pr, s);
  d.p->end_step(s);
  kvx::StepInfo s2{3, 1, nullptr};
  in = d.p->update(0, at::full({1, 2, 1, 1}, 9.0), at::full({1, 2, 1, 1}, 9.0), s2);
  EXPECT_EQ(ivec(in.head_pos), (std::vector<int64_t>{0, 2, 3, 1, 2, 3}));
  expect_vec(in.k, {0, 2, 9, 4, 5, 9});
}

}  // namespace
