// The aqua cache policy: flush rule and closed-loop decoding of docs/methods/aqua_kv.md,
// predictor files and memory accounting.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "core/common/error.h"
#include "core/higgs/predictor_file.h"
#include "core/model/rope.h"
#include "quantizers/aqua.h"
#include "quantizers/registry.h"
#include "core/common/remove_tree.h"

using namespace kvx;

namespace {

ModelInfo info(int64_t L, int64_t H, int64_t D, const Rope* rope = nullptr) {
  ModelInfo m;
  m.n_layers = L;
  m.n_heads = H;
  m.n_kv_heads = H;
  m.head_dim = D;
  m.rope = rope;
  return m;
}

AquaSettings settings_from(const nlohmann::json& policy) {
  auto m = resolve_method({{"policy", policy}});
  return aqua_settings(m["policy"]);
}

// Feeds T tokens of random K/V in chunks; returns the K/V actually fed, per layer.
struct Fed {
  std::vector<at::Tensor> k, v;  // [B, H, T, D] post-RoPE keys as handed to the policy
};

Fed feed(AquaPolicy& p, const ModelInfo& m, int64_t T, int64_t chunk, const Rope* rope, uint64_t seed,
         std::function<void(int, const AttnInputs&, int64_t, int64_t)> check = nullptr) {
  at::manual_seed(seed);
  Fed f;
  for (int64_t l = 0; l < m.n_layers; ++l) {
    // Correlated layers so that predictors have something to predict.
    auto base = at::randn({1, m.n_kv_heads, T, m.head_dim});
    f.k.push_back(base + 0.3 * at::randn_like(base));
    f.v.push_back(0.5 * base + at::randn_like(base));
  }
  for (int64_t t = 0; t < T; t += chunk) {
    const int64_t n = std::min(chunk, T - t);
    StepInfo s;
    s.pos0 = t;
    s.n_new = n;
    s.rope = rope;
    for (int l = 0; l < int(m.n_layers); ++l) {
      auto out = p.update(l, f.k[size_t(l)].narrow(2, t, n), f.v[size_t(l)].narrow(2, t, n), s);
      if (check) check(l, out, t, n);
    }
    p.end_step(s);
  }
  return f;
}

}  // namespace

TEST(AquaPolicy, FlushRuleWith32TokenChunks) {
  auto s = settings_from({{"type", "aqua"}});
  auto p = make_aqua_policy(s);
  const auto m = info(2, 1, 8);
  p->reset(m, 1);
  Fed fed;
  fed = feed(*p, m, 320, 32, nullptr, 1, [&](int l, const AttnInputs& out, int64_t t, int64_t n) {
    // Everything seen so far is returned, the chunk itself (last n entries) exact.
    ASSERT_EQ(out.k.size(2), t + n);
    ASSERT_EQ(out.n_cached, t);
    EXPECT_EQ(out.key_pos[0].item<int64_t>(), 0);
    EXPECT_EQ(out.key_pos[t + n - 1].item<int64_t>(), t + n - 1);
  });
  EXPECT_EQ(p->block_sizes(), (std::vector<int64_t>{156, 128}));
  auto mem = p->memory();
  EXPECT_EQ(mem.tokens_seen, 320);
  // prefix 4 + buffer 32 tokens, K and V, 2 layers, 8 channels, 16 bits.
  int64_t fp = 0;
  for (const auto& seg : mem.segments)
    if (seg.name.rfind("prefix.", 0) == 0 || seg.name.rfind("buffer.", 0) == 0) fp += seg.bits;
  EXPECT_EQ(fp, (4 + 32) * 2 * 2 * 8 * 16);
  // Body per token row of C = 8 (g_eff = 8, d = 2 -> 4 indices + 1 fp16 scale per row):
  // layer 0 (n = 256): 4·8 + 16 = 48 bits; layer 1 (n = 16): 4·4 + 16 = 32 bits; K and V.
  // body_bpv = 2·(48 + 32) / (2 layers · 2 · 8 values) = 5.
  EXPECT_DOUBLE_EQ(aqua_body_bpv(mem), 5.0);
  const double expect_bpv = (double(fp) + 284.0 * 2 * (48 + 32)) / (2.0 * 2 * 8 * 320);
  EXPECT_DOUBLE_EQ(mem.bpv(m, 1), expect_bpv);
}

TEST(AquaPolicy, FlushRuleTokenByTokenAndLongPrefill) {
  auto s = settings_from({{"type", "aqua"}, {"recent_buffer_size", 8}});
  auto p = make_aqua_policy(s);
  const auto m = info(2, 1, 8);
  p->reset(m, 1);
  feed(*p, m, 4 + 8 * 3 + 5, 1, nullptr, 2);
  EXPECT_EQ(p->block_sizes(), (std::vector<int64_t>{8, 8, 8}));
  auto q = make_aqua_policy(settings_from({{"type", "aqua"}}));
  q->reset(m, 1);
  feed(*q, m, 300, 300, nullptr, 3);
  EXPECT_EQ(q->block_sizes(), (std::vector<int64_t>{296}));
}

TEST(AquaPolicy, LayersOutOfOrderAreRefused) {
  auto p = make_aqua_policy(settings_from({{"type", "aqua"}}));
  p->reset(info(2, 1, 8), 1);
  StepInfo s;
  s.n_new = 1;
  EXPECT_THROW(p->update(1, at::zeros({1, 1, 1, 8}), at::zeros({1, 1, 1, 8}), s), Error);
}

class AquaWithPredictors : public ::testing::Test {
 protected:
  void SetUp() override {
    // ctest runs these tests as parallel processes: one folder each.
    dir_ = ::testing::TempDir() + "/kvx_aqua_policy" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_);
    path_ = dir_ + "/pred.h5";
    std::filesystem::remove(path_);
    at::manual_seed(11);
    auto s = settings_from({{"type", "aqua"}});
    higgs::PredictorSet ps;
    ps.attrs = aqua_quantizer_identity(s, C_);
    ps.attrs["format"] = "kvx-aqua-predictors";
    ps.attrs["n_layers"] = L_;
    ps.attrs["channels"] = C_;
    ps.attrs["model_hash"] = "test";
    ps.key.resize(L_);
    ps.value.resize(L_);
    for (int64_t l = 1; l < L_; ++l) {
      ps.key[l] = {0.8 * at::eye(C_) + 0.05 * at::randn({C_, C_}), 0.01 * at::randn({C_})};
      ps.value[l] = {0.1 * at::randn({C_, 2 * C_}), 0.01 * at::randn({C_})};
    }
    ps.metrics["key_relmse_valid"] = {0, 0.5, 0.25};
    higgs::write_predictor_file(path_, ps, false);
    written_ = ps;
  }
  void TearDown() override { kvx::remove_tree(dir_); }
  std::string dir_, path_;
  int64_t L_ = 3, H_ = 2, D_ = 8, C_ = 16;
  higgs::PredictorSet written_;
};

TEST_F(AquaWithPredictors, FileRoundTripIsBitExactAndRefusesOverwrite) {
  auto r = higgs::read_predictor_file(path_);
  ASSERT_EQ(r.n_layers(), L_);
  for (int64_t l = 1; l < L_; ++l) {
    EXPECT_TRUE(at::equal(r.key[l].weight, written_.key[l].weight.to(at::kFloat)));
    EXPECT_TRUE(at::equal(r.key[l].bias, written_.key[l].bias.to(at::kFloat)));
    EXPECT_TRUE(at::equal(r.value[l].weight, written_.value[l].weight.to(at::kFloat)));
    EXPECT_TRUE(at::equal(r.value[l].bias, written_.value[l].bias.to(at::kFloat)));
  }
  EXPECT_EQ(r.attrs["model_hash"], "test");
  EXPECT_EQ(r.metrics["key_relmse_valid"], (std::vector<double>{0, 0.5, 0.25}));
  EXPECT_THROW(higgs::write_predictor_file(path_, written_, false), Error);
  EXPECT_NO_THROW(higgs::write_predictor_file(path_, written_, true));
  auto listing = higgs::describe_h5(path_);
  EXPECT_NE(listing.find("key_predictor/1/weight [16, 16] float32"), std::string::npos) << listing;
  EXPECT_NE(listing.find("@model_hash = \"test\""), std::string::npos) << listing;
}

TEST_F(AquaWithPredictors, FileForAnotherQuantizerOrShapeIsRefused) {
  auto p = make_aqua_policy(settings_from({{"type", "aqua"}, {"edenn_n", 64}, {"predictors", path_}}));
  try {
    p->reset(info(L_, H_, D_), 1);
    FAIL() << "expected a kvx::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("quantizer_n: file 16 vs this run 64"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("recalibrate"), std::string::npos) << e.what();
  }
  auto q = make_aqua_policy(settings_from({{"type", "aqua"}, {"predictors", path_}}));
  EXPECT_THROW(q->reset(info(L_ + 1, H_, D_), 1), Error);
  EXPECT_THROW(make_aqua_policy(settings_from({{"type", "aqua"}, {"predictors", dir_ + "/missing.h5"}})), Error);
}

TEST_F(AquaWithPredictors, DecoderReproducesEncoderExactlyWithRope) {
  RopeConfig rc;
  Rope rope(D_, rc, 512, at::kCPU);
  auto p = make_aqua_policy(settings_from({{"type", "aqua"}, {"predictors", path_}}));
  const auto m = info(L_, H_, D_, &rope);
  p->reset(m, 1);
  std::vector<AttnInputs> last(L_);
  auto fed = feed(*p, m, 200, 32, &rope, 5, [&](int l, const AttnInputs& out, int64_t, int64_t) { last[l] = out; });
  ASSERT_EQ(p->block_sizes(), (std::vector<int64_t>{156}));
  auto [K, V] = p->decode_block_from_codes(0);
  auto [Kc, Vc] = p->cached_block(0);
  for (int64_t l = 0; l < L_; ++l) {
    EXPECT_TRUE(at::equal(K[l], Kc[l])) << "layer " << l;
    EXPECT_TRUE(at::equal(V[l], Vc[l])) << "layer " << l;
    // Attention got RoPE(K̂) for the block, exact prefix and buffer.
    auto blk_k = last[l].k.narrow(2, 4, 156);
    EXPECT_TRUE(at::allclose(blk_k, rope.apply_range(K[l], 4), 1e-5, 1e-5));
    EXPECT_TRUE(at::equal(last[l].k.narrow(2, 0, 4), fed.k[l].narrow(2, 0, 4)));
    EXPECT_TRUE(at::equal(last[l].k.narrow(2, 160, 40), fed.k[l].narrow(2, 160, 40)));
    EXPECT_TRUE(at::equal(last[l].v.narrow(2, 160, 40), fed.v[l].narrow(2, 160, 40)));
    // Reconstruction is close to the de-rotated truth (2-bit residual, 4-bit layer 0).
    auto truth = rope.apply_range(fed.k[l].narrow(2, 4, 156), 4, true);
    const double rel = (K[l] - truth).pow(2).sum().item<double>() / truth.pow(2).sum().item<double>();
    EXPECT_LT(rel, l == 0 ? 0.03 : 0.2) << "layer " << l;
  }
  EXPECT_GT(p->memory().side_bits(), 0);
}
