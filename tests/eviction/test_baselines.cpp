// Seed 003's baselines (quantizers/razor.h, dynamic_kv.h, uncomp.h, zack.h) against the
// hand-computed worked examples written in their header comments, and the per-KV-head mask
// (AttnInputs::head_pos) of core/model/attention.cpp.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "quantizers/registry.h"
#include "quantizers/uncomp.h"

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

std::unique_ptr<kvx::KVCachePolicy> policy(const json& p, const kvx::ModelInfo& m) {
  auto x = kvx::make_policy(kvx::resolve_method(json{{"policy", p}}));
  x->reset(m, 1);
  return x;
}

std::vector<int64_t> ivec(const at::Tensor& t) {
  auto c = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}
void expect_vec(const at::Tensor& t, std::vector<double> want, double tol = 1e-5) {
  auto f = t.to(at::kDouble).contiguous().view({-1});
  ASSERT_EQ(f.numel(), int64_t(want.size()));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(f[int64_t(i)].item<double>(), want[i], tol) << "at " << i;
}

// One chunk of n tokens (keys = values/10 = 1..n) into every layer; layer l's last query row
// gets last_rows[l]; returns nothing (budgets decided in end_step).
void prompt(kvx::KVCachePolicy& p, const kvx::ModelInfo& m, int64_t n, const std::vector<std::vector<float>>& last_rows) {
  kvx::StepInfo s{0, n, nullptr};
  auto k = at::arange(1, n + 1, at::kFloat).view({1, 1, n, 1});
  for (int l = 0; l < m.n_layers; ++l) {
    p.update(l, k, k * 10, s);
    auto pr = at::zeros({1, 1, n, n});
    pr[0][0][n - 1] = at::tensor(last_rows[size_t(l)]);
    p.observe_attention(l, pr, s);
  }
  p.end_step(s);
}

std::vector<kvx::AttnInputs> next_token(kvx::KVCachePolicy& p, const kvx::ModelInfo& m, int64_t pos, float x) {
  kvx::StepInfo s{pos, 1, nullptr};
  std::vector<kvx::AttnInputs> out;
  for (int l = 0; l < m.n_layers; ++l) out.push_back(p.update(l, at::full({1, 1, 1, 1}, x), at::full({1, 1, 1, 1}, 10 * x), s));
  return out;
}

TEST(Razor, WorkedExample) {
  const auto m = model(2, 1, 1, 1);
  auto p = policy({{"type", "razor"}, {"retrieval_fraction", 0.5}, {"sink_size", 1}, {"window_size", 1},
                   {"prompt_len", 4}, {"obs_window", 1}},
                  m);
  prompt(*p, m, 4, {{0.1f, 0.8f, 0.05f, 0.05f}, {0.6f, 0.1f, 0.1f, 0.2f}});
  // layer 0 (long-range mass 0.85) is the retrieval head and keeps 4 entries; layer 1 keeps
  // positions 0 and 3 plus the compensation entry (mean of keys 2, 3 = 2.5; values 25)
  auto r = p->memory();
  EXPECT_EQ(r.device_bits(), (4 + 2) * 2 * 16 + (16 + 16 + 32));
  auto in = next_token(*p, m, 4, 5);
  EXPECT_EQ(ivec(in[0].head_pos), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(ivec(in[1].head_pos), (std::vector<int64_t>{-1, 0, 3, 4}));  // compensation entry first
  expect_vec(in[1].k, {2.5, 1, 4, 5});
  expect_vec(in[1].v, {25, 10, 40, 50});
}

TEST(DynamicKV, WorkedExample) {
  const auto m = model(2, 1, 1, 1);
  auto p = policy({{"type", "dynamic_kv"}, {"budget", 3}, {"sink_size", 0}, {"window_size", 1}, {"prompt_len", 5},
                   {"obs_window", 1}},
                  m);
  prompt(*p, m, 5, {{0.9f, 0.02f, 0.02f, 0.02f, 0.04f}, {0.3f, 0.25f, 0.2f, 0.15f, 0.1f}});
  auto in = next_token(*p, m, 5, 6);
  EXPECT_EQ(ivec(in[0].head_pos), (std::vector<int64_t>{0, 4, 5}));
  EXPECT_EQ(ivec(in[1].head_pos), (std::vector<int64_t>{0, 1, 2, 4, 5}));
  expect_vec(in[1].k, {1, 2, 3, 5, 6});
  expect_vec(in[1].v, {10, 20, 30, 50, 60});
}

TEST(UNComp, WorkedExampleEntropyAndBudgets) {
  auto k0 = at::tensor(std::vector<float>{1, 0, -1, 0}).view({1, 2, 2});
  auto k1 = at::tensor(std::vector<float>{1, 0, 0, 1}).view({1, 2, 2});
  EXPECT_NEAR(kvx::matrix_entropy(k0, 0), 0.0, 1e-9);
  EXPECT_NEAR(kvx::matrix_entropy(k1, 0), std::log(2.0), 1e-9);
  kvx::BudgetStats st;
  st.n = 2;
  st.keys = {{k0, k1}};
  st.scores = {{at::zeros({2}, at::kDouble), at::zeros({2}, at::kDouble)}};
  auto b = kvx::uncomp_rule(3, 0)(st);
  EXPECT_EQ(b[0][0], 2);
  EXPECT_EQ(b[0][1], 4);
}

TEST(UNComp, HeadsKeepTheirOwnBudgetsAndMemoryCountsOnlyKept) {
  // 1 layer, 2 KV heads, D 2: head 0 keys lie on one line (entropy 0), head 1 spread (ln 2).
  const auto m = model(1, 2, 2, 2);
  auto p = policy({{"type", "uncomp"}, {"budget", 3}, {"sink_size", 0}, {"window_size", 1}, {"prompt_len", 6},
                   {"obs_window", 1}},
                  m);
  kvx::StepInfo s{0, 6, nullptr};
  auto k = at::zeros({1, 2, 6, 2});
  for (int i = 0; i < 6; ++i) {
    k[0][0][i][0] = (i % 2 ? -1.0 : 1.0);          // (±1, 0)
    k[0][1][i][i % 2] = 1.0;                        // (1,0) / (0,1)
  }
  p->update(0, k, k, s);
  auto pr = at::zeros({1, 2, 6, 6});
  pr[0][0][5] = at::tensor(std::vector<float>{0.5f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f});
  pr[0][1][5] = at::tensor(std::vector<float>{0.1f, 0.1f, 0.1f, 0.1f, 0.5f, 0.1f});
  p->observe_attention(0, pr, s);
  p->end_step(s);
  // budgets: 6·1/3 = 2 and 6·2/3 = 4 -> head 0 keeps {0, 5}; head 1 keeps {5} + top 3 of
  // (0.1, 0.1, 0.1, 0.1, 0.5) with ties to the more recent: {4, 3, 2}
  auto r = p->memory();
  EXPECT_EQ(r.device_bits(), (2 + 4) * 2 /*K,V*/ * 2 /*D*/ * 16);
  kvx::StepInfo s2{6, 1, nullptr};
  auto in = p->update(0, at::ones({1, 2, 1, 2}), at::ones({1, 2, 1, 2}), s2);
  EXPECT_EQ(ivec(in.head_pos), (std::vector<int64_t>{0, 5, 6, -2, -2, 2, 3, 4, 5, 6}));
}

TEST(Zack, WorkedExampleRankOne) {
  const auto m = model(1, 1, 1, 2);
  auto p = policy({{"type", "zack"}, {"rank_fraction", 0.5}, {"fit_tokens", 2}}, m);
  kvx::StepInfo s{0, 2, nullptr};
  auto k = at::tensor(std::vector<float>{3, 4, 6, 8}).view({1, 1, 2, 2});
  p->update(0, k, k, s);
  p->end_step(s);
  EXPECT_EQ(p->memory().device_bits(), 2 * 1 * 2 * 16 /*coeffs*/ + 2 * 2 * 16 /*bases*/);
  kvx::StepInfo s2{2, 1, nullptr};
  auto in = p->update(0, at::tensor(std::vector<float>{4, 3}).view({1, 1, 1, 2}),
                      at::tensor(std::vector<float>{4, 3}).view({1, 1, 1, 2}), s2);
  expect_vec(in.k, {3, 4, 6, 8, 4, 3});  // rank-1 fit is exact on the prompt; the chunk is full
  p->end_step(s2);
  kvx::StepInfo s3{3, 1, nullptr};
  in = p->update(0, at::zeros({1, 1, 1, 2}), at::zeros({1, 1, 1, 2}), s3);
  expect_vec(in.k.narrow(2, 2, 1), {2.88, 3.84});
  expect_vec(in.v.narrow(2, 2, 1), {2.88, 3.84});
  EXPECT_EQ(ivec(in.key_pos), (std::vector<int64_t>{0, 1, 2, 3}));
}

// A fixed policy that hands attention per-head positions with a padding slot.
class FixedHeads final : public kvx::KVCachePolicy {
 public:
  void reset(const kvx::ModelInfo&, int64_t) override {}
  kvx::AttnInputs update(int, const at::Tensor& k_new, const at::Tensor& v_new, const kvx::StepInfo&) override {
    kvx::AttnInputs a;
    // head 0: entries (pos 0, 1), head 1: entry (pos 0) + padding; then the chunk at pos 2
    a.k = at::cat({at::tensor(std::vector<float>{1, 0, 2, 0}).view({1, 2, 2, 1}), k_new}, 2);
    a.v = at::cat({at::tensor(std::vector<float>{10, 20, 30, 99}).view({1, 2, 2, 1}), v_new}, 2);
    a.head_pos = at::tensor(std::vector<int64_t>{0, 1, 2, 0, -2, 2}).view({2, 3});
    a.key_pos = a.head_pos[0].clone();
    a.n_cached = 2;
    return a;
  }
  kvx::MemoryReport memory() const override { return {}; }
  std::string name() const override { return "fixed"; }
};

TEST(HeadPos, AttentionMasksPaddingPerHead) {
  FixedHeads p;
  kvx::StepInfo s{2, 1, nullptr};
  auto q = at::ones({1, 2, 1, 1});
  auto kn = at::zeros({1, 2, 1, 1}), vn = at::full({1, 2, 1, 1}, 40.0);
  kvx::AttentionOptions opt;
  opt.scale = 1.0;
  auto out = p.attend(0, q, kn, vn, s, opt).view({2});
  // head 0: logits (1, 0, 0) over values (10, 20, 40); head 1: logits (2, 0) over (30, 40)
  const double e = std::exp(1.0);
  EXPECT_NEAR(out[0].item<double>(), (10 * e + 20 + 40) / (e + 2), 1e-4);
  const double e2 = std::exp(2.0);
  EXPECT_NEAR(out[1].item<double>(), (30 * e2 + 40) / (e2 + 1), 1e-4);
}

}  // namespace
