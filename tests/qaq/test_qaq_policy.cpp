// QaqPolicy through the cache-policy interface, with random K/V and synthetic attention
// probabilities, checked against an independent slow reference of docs/methods/qaq.md's rules
// (widths) and accounting (memory), and the registry wiring of the qaq rows.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/common/error.h"
#include "quantizers/qaq.h"
#include "quantizers/registry.h"

using namespace kvx;

namespace {

ModelInfo small_model() {
  ModelInfo m;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.head_dim = 16;
  return m;
}

QaqRoleConfig role(bool key, QaqLevel level, int W = 3, double tau = 1.0) {
  QaqRoleConfig c;
  c.is_key = key;
  c.level = level;
  c.group.outliers_ratio = 0.1;
  c.last_n_attentions = W;
  c.target_quantization_error = tau;
  c.n_bits_min = 0;
  c.n_bits_max = 6;
  c.q_norm = key ? 50.0 : 300;  // small q_norm / tau spread the widths over the range
  if (!key) c.target_quantization_error = 0.05 * tau;
  return c;
}

// Drives a policy and keeps everything a slow reference needs.
struct Driver {
  ModelInfo m = small_model();
  int64_t B = 2;
  std::vector<at::Tensor> k, v;                 // per layer [B, Hkv, T, D], all tokens so far
  std::vector<std::vector<at::Tensor>> rows;    // per layer: query rows [B, Hq, N_row]
  std::vector<AttnInputs> last;                 // per layer, last update's return
  std::vector<double> q_sq;                     // ‖q/√D‖² of every query handed to the policy
  int64_t T = 0;

  void step(KVCachePolicy& p, int64_t n, bool observe = true) {
    last.assign(m.n_layers, {});
    StepInfo s{T, n, nullptr};
    for (int l = 0; l < m.n_layers; ++l) {
      auto kn = at::randn({B, m.n_kv_heads, n, m.head_dim}) * (1.0 + l);
      auto vn = at::randn({B, m.n_kv_heads, n, m.head_dim}) * 0.5;
      k.resize(m.n_layers);
      v.resize(m.n_layers);
      rows.resize(m.n_layers);
      k[l] = k[l].defined() ? at::cat({k[l], kn}, 2) : kn;
      v[l] = v[l].defined() ? at::cat({v[l], vn}, 2) : vn;
      if (observe && p.wants_queries()) {
        auto q = at::randn({B, m.n_heads, n, m.head_dim}) * (0.5 + l);
        auto acc = q.accessor<float, 4>();
        for (int64_t b = 0; b < B; ++b)
          for (int64_t h = 0; h < m.n_heads; ++h)
            for (int64_t t = 0; t < n; ++t) {
              double sq = 0;
              for (int64_t d = 0; d < m.head_dim; ++d) sq += double(acc[b][h][t][d]) * acc[b][h][t][d];
              q_sq.push_back(sq / double(m.head_dim));
            }
        p.observe_queries(l, q, s);
      }
      last[l] = p.update(l, kn, vn, s);
      if (observe && p.wants_attention()) {
        const int64_t N = T + n;
        auto logits = at::randn({B, m.n_heads, n, N}) * 3.0;
        auto pos = at::arange(N, at::kLong);
        auto qpos = at::arange(T, T + n, at::kLong).view({n, 1});
        logits.masked_fill_(pos.view({1, N}).gt(qpos), -INFINITY);
        auto probs = at::softmax(logits, -1);
        for (int64_t i = 0; i < n; ++i) rows[l].push_back(probs.select(2, i).clone());
        p.observe_attention(l, probs, s);
      }
    }
    T += n;
    p.end_step(s);
  }

  // "Groups and outliers": with no ties the outliers are the k_lo smallest and the M - k_hi largest.
  static double inlier_range(std::vector<float> x, double r, bool symmetric = false) {
    std::sort(x.begin(), x.end());
    const int64_t M = int64_t(x.size());
    const int64_t klo = int64_t(std::ceil(r / 2 * M)), khi = int64_t(std::floor((1 - r / 2) * M));
    if (symmetric) return 2 * std::max(std::fabs(double(x[khi - 1])), std::fabs(double(x[klo])));
    return double(x[khi - 1]) - double(x[klo]);
  }
  static int64_t outlier_count(int64_t M, double r) {
    return int64_t(std::ceil(r / 2 * M)) + M - int64_t(std::floor((1 - r / 2) * M));
  }

  // Values of a group as a flat vector (head-major, layer-major for token level).
  std::vector<float> group_values(const QaqRoleConfig& c, int64_t l, int64_t b, int64_t h, int64_t t) const {
    std::vector<float> out;
    const auto& src = c.is_key ? k : v;
    auto take = [&](int64_t ll, int64_t hh) {
      auto row = src[ll][b][hh][t].contiguous();
      out.insert(out.end(), row.data_ptr<float>(), row.data_ptr<float>() + m.head_dim);
    };
    if (c.level == QaqLevel::Head) take(l, h);
    else if (c.level == QaqLevel::Layer) for (int64_t hh = 0; hh < m.n_kv_heads; ++hh) take(l, hh);
    else for (int64_t ll = 0; ll < m.n_layers; ++ll) for (int64_t hh = 0; hh < m.n_kv_heads; ++hh) take(ll, hh);
    return out;
  }

  // Max attention token t got from the last W rows of layer l over query heads [h0, h1).
  double attn(int64_t l, int64_t b, int64_t h0, int64_t h1, int64_t t, int W) const {
    double a = 0;
    const auto& R = rows[l];
    for (size_t i = R.size() >= size_t(W) ? R.size() - W : 0; i < R.size(); ++i)
      for (int64_t h = h0; h < h1; ++h)
        if (t < R[i].size(2)) a = std::max(a, double(R[i][b][h][t].item<float>()));
    return a;
  }

  int ref_bits(const QaqRoleConfig& c, int64_t l, int64_t b, int64_t h, int64_t t) const {
    if (!c.use_attentions) return c.n_bits_uniform;
    if (T <= 1) return -1;
    if (t >= T - (c.last_n_attentions - 1)) return c.n_bits_max;
    const double R = inlier_range(group_values(c, l, b, h, t), c.group.outliers_ratio, c.group.symmetric);
    double e;
    const double tau = c.target_quantization_error, Td = double(T);
    if (c.is_key) {
      e = std::sqrt(12.0 / c.q_norm * std::log(Td * Td * Td / (Td - 1) * tau * tau + 1));
    } else {
      const int64_t G = m.n_heads / m.n_kv_heads;
      double a = 0;
      if (c.level == QaqLevel::Head) a = attn(l, b, h * G, h * G + G, t, c.last_n_attentions);
      else if (c.level == QaqLevel::Layer) a = attn(l, b, 0, m.n_heads, t, c.last_n_attentions);
      else for (int64_t ll = 0; ll < m.n_layers; ++ll) a = std::max(a, attn(ll, b, 0, m.n_heads, t, c.last_n_attentions));
      e = std::sqrt(12.0 / Td) * tau / std::max(a, 1e-12);
    }
    const double raw = std::ceil(std::log2(R / (2 * e) + 1));
    return int(std::min<double>(c.n_bits_max, std::max<double>(c.n_bits_min, raw)));
  }
};

void check_widths(const Driver& d, const QaqPolicy& p, const QaqRoleConfig& c, int* distinct = nullptr) {
  std::set<int> seen;
  const int64_t H = c.level == QaqLevel::Head ? d.m.n_kv_heads : 1;
  const int64_t L = c.level == QaqLevel::Token ? 1 : d.m.n_layers;
  for (int64_t l = 0; l < L; ++l)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < d.T; ++t) {
          const int want = d.ref_bits(c, l, b, h, t);
          ASSERT_EQ(p.group_bits(c.is_key, int(l), b, h, t), want)
              << (c.is_key ? "key" : "value") << " l" << l << " b" << b << " h" << h << " t" << t << " T" << d.T;
          seen.insert(want);
        }
  if (distinct) *distinct = int(seen.size());
}

}  // namespace

class QaqLevels : public ::testing::TestWithParam<QaqLevel> {};

TEST_P(QaqLevels, StreamingWidthsMatchSlowReference) {
  at::manual_seed(1);
  auto kc = role(true, GetParam()), vc = role(false, GetParam());
  QaqPolicy p(kc, vc, QaqSchedule::Streaming);
  Driver d;
  p.reset(d.m, d.B);
  int distinct_k = 0, distinct_v = 0;
  for (int64_t n : {1, 6, 1, 3, 1, 1}) {
    d.step(p, n);
    check_widths(d, p, kc, &distinct_k);
    check_widths(d, p, vc, &distinct_v);
  }
  EXPECT_GE(distinct_v, 3);  // the test exercises more than the clamps
  EXPECT_GE(distinct_k, 2);
}

INSTANTIATE_TEST_SUITE_P(All, QaqLevels, ::testing::Values(QaqLevel::Head, QaqLevel::Layer, QaqLevel::Token));

TEST(QaqPolicy, ReturnsDequantizedCacheAndOwnChunkExact) {
  at::manual_seed(2);
  auto kc = role(true, QaqLevel::Head), vc = role(false, QaqLevel::Head);
  QaqPolicy p(kc, vc, QaqSchedule::Streaming);
  Driver d;
  p.reset(d.m, d.B);
  d.step(p, 5);
  d.step(p, 2);
  for (int l = 0; l < d.m.n_layers; ++l) {
    const auto& a = d.last[l];
    EXPECT_EQ(a.n_cached, 5);
    EXPECT_EQ(a.k.size(2), 7);
    EXPECT_TRUE(at::equal(a.key_pos, at::arange(0, 7, at::kLong)));
    // own chunk: exact
    EXPECT_TRUE(at::equal(a.k.narrow(2, 5, 2), d.k[l].narrow(2, 5, 2)));
    // cached entries: within half a grid step of the quantizer chosen for T = 5, per group
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.m.n_kv_heads; ++h)
        for (int64_t t = 0; t < 5; ++t) {
          auto x = d.k[l][b][h][t], y = a.k[b][h][t];
          // after step 1 (T = 5) the widths were those of the reference at T = 5: recompute R
          auto xs = std::vector<float>(x.data_ptr<float>(), x.data_ptr<float>() + d.m.head_dim);
          const double R = Driver::inlier_range(xs, kc.group.outliers_ratio);
          const double err = (x - y).abs().max().item<double>();
          // widths >= 0: |err| <= s (clipping on the far side of the mean is bounded by R)
          EXPECT_LE(err, R + 1e-3) << l << " " << b << " " << h << " " << t;
          // outliers (r = 0.1 of 16 values: the minimum and the maximum) come back as fp16
          const int64_t imax = x.argmax().item<int64_t>(), imin = x.argmin().item<int64_t>();
          EXPECT_NEAR(y[imax].item<double>(), x[imax].item<double>(), 5e-3);
          EXPECT_NEAR(y[imin].item<double>(), x[imin].item<double>(), 5e-3);
        }
  }
}

TEST(QaqPolicy, MemoryAccountingEqualsFormula) {
  at::manual_seed(3);
  for (bool symmetric : {false, true}) {
    auto kc = role(true, QaqLevel::Head), vc = role(false, QaqLevel::Layer);
    kc.group.symmetric = vc.group.symmetric = symmetric;
    QaqPolicy p(kc, vc, QaqSchedule::Streaming);
    Driver d;
    p.reset(d.m, d.B);
    for (int64_t n : {4, 1, 2}) d.step(p, n);
    const auto rep = p.memory();
    int64_t want = 0;
    double paper = 0;
    for (const auto* c : {&kc, &vc}) {
      const int64_t H = c->level == QaqLevel::Head ? d.m.n_kv_heads : 1;
      const int64_t M = d.m.head_dim * (c->level == QaqLevel::Head ? 1 : d.m.n_kv_heads);
      const int64_t n_out = Driver::outlier_count(M, c->group.outliers_ratio);
      const int idx_bits = int(std::ceil(std::log2(double(M))));
      for (int64_t l = 0; l < d.m.n_layers; ++l)
        for (int64_t b = 0; b < d.B; ++b)
          for (int64_t h = 0; h < H; ++h)
            for (int64_t t = 0; t < d.T; ++t) {
              const int bits = d.ref_bits(*c, l, b, h, t);
              want += 8 * (((M - n_out) * bits + 7) / 8);      // packed codes, whole bytes
              want += (symmetric ? 1 : 2) * 16 + 8;           // stats + width field
              want += n_out * (16 + idx_bits);                // outliers: fp16 value + index
              paper += bits * (1 - c->group.outliers_ratio) * M + 16 * c->group.outliers_ratio * M +
                       (symmetric ? 1 : 2) * 16;
            }
    }
    EXPECT_EQ(rep.device_bits(), want) << "symmetric " << symmetric;
    const int64_t values = d.m.n_layers * d.B * d.m.n_kv_heads * d.m.head_dim * d.T;
    EXPECT_EQ(rep.offload_bits(), 2 * values * 16);
    EXPECT_EQ(rep.tokens_seen, d.T);
    EXPECT_DOUBLE_EQ(rep.bpv(d.m, d.B), double(want) / (2.0 * values));
    EXPECT_NEAR(p.paper_bpv(), paper / (2.0 * values), 1e-9);
  }
}

TEST(QaqPolicy, UniformBitsPaperBpvMatchesSection36) {
  // use_attentions false, 2 bits, r = 0.01, head level, M = 128:
  // avg_bits = 2·0.99 + 16·0.01; per token and role: avg_bits·L·hidden + 2·16·(L·Hkv) groups.
  ModelInfo m;
  m.n_layers = 3;
  m.n_heads = 2;
  m.n_kv_heads = 1;
  m.head_dim = 128;
  QaqRoleConfig c;
  c.use_attentions = false;
  c.n_bits_uniform = 2;
  c.group.outliers_ratio = 0.01;
  QaqPolicy p(c, c, QaqSchedule::Streaming);
  p.reset(m, 1);
  StepInfo s{0, 10, nullptr};
  for (int l = 0; l < 3; ++l) p.update(l, at::randn({1, 1, 10, 128}), at::randn({1, 1, 10, 128}), s);
  p.end_step(s);
  const double hidden = 128, L = 3;
  const double per_token = (2 * 0.99 + 16 * 0.01) * L * hidden + 2 * 16 * L;
  EXPECT_NEAR(p.paper_bpv(), per_token / (L * hidden), 1e-12);
  EXPECT_NEAR(16.0 / p.paper_bpv(), 16 * L * hidden / per_token, 1e-9);  // upstream CR
  // kvx bpv: 126 codes·2 bits = 32 bytes, 2 fp16 stats, 8-bit width, 2 outliers·(16 + 7)
  EXPECT_NEAR(p.memory().bpv(m, 1), (32 * 8 + 32 + 8 + 2 * 23) / 128.0, 1e-12);
}

TEST(QaqPolicy, OneShotQuantizesPrefillOnly) {
  at::manual_seed(4);
  auto kc = role(true, QaqLevel::Head), vc = role(false, QaqLevel::Head);
  QaqPolicy p(kc, vc, QaqSchedule::OneShot);
  Driver d;
  p.reset(d.m, d.B);
  d.step(p, 8);
  check_widths(d, p, kc);
  check_widths(d, p, vc);
  std::vector<int> before;
  for (int64_t t = 0; t < 8; ++t) before.push_back(p.group_bits(false, 1, 1, 1, t));
  EXPECT_FALSE(p.wants_attention());
  d.step(p, 3);
  d.step(p, 2);
  for (int64_t t = 0; t < 8; ++t) EXPECT_EQ(p.group_bits(false, 1, 1, 1, t), before[t]);
  for (int64_t t = 8; t < 13; ++t) EXPECT_EQ(p.group_bits(true, 0, 0, 0, t), -1);
  // answer tokens come back exactly (full precision)
  for (int l = 0; l < d.m.n_layers; ++l)
    EXPECT_TRUE(at::equal(d.last[l].v.narrow(2, 8, 5), d.v[l].narrow(2, 8, 5)));
  // they are accounted at 16 bits: 5 tokens × values per token × 2 roles
  const auto rep = p.memory();
  int64_t fp = 0;
  for (const auto& s : rep.segments)
    if (s.name == "k.fp" || s.name == "v.fp") fp += s.bits;
  EXPECT_EQ(fp, 2 * 5 * d.m.n_layers * d.B * d.m.n_kv_heads * d.m.head_dim * 16);
}

TEST(QaqPolicy, NoneSlotStaysFullPrecisionAndNeedsNoAttention) {
  at::manual_seed(5);
  QaqRoleConfig off;
  off.enabled = false;
  QaqPolicy p(role(true, QaqLevel::Head), off, QaqSchedule::Streaming);
  EXPECT_FALSE(p.wants_attention());
  Driver d;
  p.reset(d.m, d.B);
  d.step(p, 4);
  d.step(p, 1);
  for (int l = 0; l < d.m.n_layers; ++l) EXPECT_TRUE(at::equal(d.last[l].v, d.v[l]));
  EXPECT_EQ(p.group_bits(false, 0, 0, 0, 0), -1);
}

TEST(QaqPolicy, ValueRuleWithoutAttentionFailsClearly) {
  QaqPolicy p(role(true, QaqLevel::Head), role(false, QaqLevel::Head), QaqSchedule::Streaming);
  Driver d;
  p.reset(d.m, d.B);
  EXPECT_THROW(d.step(p, 4, /*observe=*/false), Error);
}

// q_norm: auto = the 90th percentile of ‖q/√D‖² over the queries seen up to the first key
// quantization (docs/methods/qaq.md), computed here from the driver's own record of the queries.
static QaqRoleConfig auto_keys() {
  auto kc = role(true, QaqLevel::Head);
  kc.q_norm = 0;
  return kc;
}
static QaqRoleConfig disabled() {
  QaqRoleConfig off;
  off.enabled = false;
  return off;
}

TEST(QaqPolicy, QNormAutoCalibratesFromPromptQueries) {
  auto kc = auto_keys();
  QaqPolicy p(kc, disabled(), QaqSchedule::Streaming);
  Driver d;
  p.reset(d.m, d.B);
  EXPECT_TRUE(p.wants_queries());
  d.step(p, 6);
  EXPECT_FALSE(p.wants_queries());  // fixed after the first key quantization
  std::vector<double> x = d.q_sq;
  ASSERT_EQ(int64_t(x.size()), d.m.n_layers * d.B * d.m.n_heads * 6);
  std::sort(x.begin(), x.end());
  const double pos = 0.9 * double(x.size() - 1);
  const size_t lo = size_t(std::floor(pos));
  const double expect = x[lo] + (pos - double(lo)) * (x[lo + 1] - x[lo]);
  EXPECT_NEAR(p.key_q_norm(), expect, 1e-5 * expect);
  d.step(p, 1);
  EXPECT_NEAR(p.key_q_norm(), expect, 1e-5 * expect);
  kc.q_norm = p.key_q_norm();
  check_widths(d, p, kc);
  // A new sequence calibrates again, on its own prompt.
  p.reset(d.m, d.B);
  EXPECT_TRUE(std::isnan(p.key_q_norm()));
  EXPECT_TRUE(p.wants_queries());
}

TEST(QaqPolicy, QNormAutoWithoutQueriesFailsClearly) {
  QaqPolicy p(auto_keys(), disabled(), QaqSchedule::Streaming);
  Driver d;
  p.reset(d.m, d.B);
  EXPECT_THROW(d.step(p, 4, /*observe=*/false), Error);
}

TEST(QaqRegistry, ResolvesRolesDefaultsAndPolicy) {
  auto m = resolve_method({{"key", {{"type", "qaq"}}}, {"value", {{"type", "qaq"}, {"q_norm", "auto"}}}});
  EXPECT_EQ(m["key"]["key_or_value_cache"], "key");
  EXPECT_EQ(m["value"]["key_or_value_cache"], "value");
  EXPECT_EQ(m["value"]["q_norm"], 0.0);
  EXPECT_EQ(m["key"]["level"], "head");
  EXPECT_EQ(m["key"]["outliers_ratio"], 0.01);
  EXPECT_EQ(m["key"]["last_n_attentions"], 5);
  EXPECT_EQ(m["key"]["target_quantization_error"], 3.0);
  EXPECT_EQ(m["key"]["n_bits_min"], 1);
  EXPECT_EQ(m["key"]["n_bits_max"], 4);
  EXPECT_EQ(m["key"]["q_norm"], 300.0);
  EXPECT_EQ(m["key"]["bits_formula"], "code");
  EXPECT_EQ(m["key"]["center"], "mean");
  EXPECT_EQ(m["policy"]["type"], "qaq_cache");
  EXPECT_EQ(m["policy"]["schedule"], "streaming");
  auto p = make_policy(m);
  EXPECT_EQ(p->name(), "qaq");
  EXPECT_TRUE(p->wants_attention());
  EXPECT_NE(method_label(m).find("qaq"), std::string::npos);
  // value-only QAQ
  auto mv = resolve_method({{"key", "none"}, {"value", {{"type", "qaq"}, {"use_attentions", false}}}});
  EXPECT_EQ(mv["policy"]["type"], "qaq_cache");
  EXPECT_FALSE(make_policy(mv)->wants_attention());
}

TEST(QaqRegistry, RejectsBadCombinations) {
  auto path_of = [](const nlohmann::json& spec) {
    try {
      resolve_method(spec);
    } catch (const ParamError& e) {
      std::string s;
      for (const auto& p : e.path) s += "/" + p;
      return s;
    }
    return std::string("no error");
  };
  EXPECT_EQ(path_of({{"key", {{"type", "qaq"}, {"key_or_value_cache", "value"}}}}), "/key/key_or_value_cache");
  EXPECT_EQ(path_of({{"key", {{"type", "qaq"}, {"n_bits_min", 4}, {"n_bits_max", 2}}}}), "/key/n_bits_min");
  EXPECT_EQ(path_of({{"key", {{"type", "qaq"}}}, {"value", {{"type", "kvq"}}}}), "/value/type");
  EXPECT_EQ(path_of({{"key", {{"type", "qaq"}, {"method", "normal"}}}}), "/key/method");
  EXPECT_EQ(path_of({{"key", {{"type", "qaq"}, {"level", "block"}}}}), "/key/level");
  EXPECT_EQ(path_of({{"key", {{"type", "qaq"}, {"q_norm", "big"}}}}), "/key/q_norm");
  EXPECT_EQ(path_of({{"key", {{"type", "qaq"}}}, {"policy", {{"type", "qaq_cache"}, {"schedule", "once"}}}}),
            "/policy/schedule");
}
