// Cache policies built through the registry, fed random keys/values through update():
// the chunk comes back exactly, cached tokens within the quantization bound, the KVQ flush
// schedule (docs/methods/kvq.md, "The flush rule"), memory() equal to closed formulas computed
// here, and the layouts / masks of the worked examples of docs/methods/selective_int8.md and
// docs/methods/sink_window.md.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "quantizers/registry.h"

namespace {

using json = nlohmann::json;

kvx::ModelInfo model(int64_t L, int64_t H, int64_t D) {
  kvx::ModelInfo m;
  m.n_layers = L;
  m.n_heads = H;
  m.n_kv_heads = H;
  m.head_dim = D;
  return m;
}

std::unique_ptr<kvx::KVCachePolicy> policy(const json& spec, const kvx::ModelInfo& m, int64_t B) {
  auto p = kvx::make_policy(kvx::resolve_method(spec));
  p->reset(m, B);
  return p;
}

int64_t seg(const kvx::MemoryReport& r, const std::string& name) {
  for (const auto& s : r.segments)
    if (s.name == name) return s.elements;
  return 0;
}

// Feeds the tokens [from, from + n) of K/V to every layer; returns layer 0's inputs.
kvx::AttnInputs feed(kvx::KVCachePolicy& p, const kvx::ModelInfo& m, const at::Tensor& K, const at::Tensor& V,
                     int64_t from, int64_t n) {
  kvx::StepInfo s;
  s.pos0 = from;
  s.n_new = n;
  kvx::AttnInputs first;
  for (int l = 0; l < m.n_layers; ++l) {
    auto out = p.update(l, K.narrow(2, from, n), V.narrow(2, from, n), s);
    if (l == 0) first = out;
  }
  p.end_step(s);
  return first;
}

TEST(KvqPolicy, FlushScheduleWithChunksOf32) {
  const auto m = model(1, 2, 64);
  auto p = policy(json{{"key", "kvq"}, {"value", "kvq"}}, m, 1);
  auto K = at::randn({1, 2, 352, 64}), V = at::randn({1, 2, 352, 64});
  std::vector<int64_t> fp;
  for (int c = 0; c < 11; ++c) {
    feed(*p, m, K, V, 32 * c, 32);
    const auto r = p->memory();
    fp.push_back(seg(r, "k.residual") / (2 * 64));
    EXPECT_EQ(seg(r, "v.residual") / (2 * 64), fp.back());
    EXPECT_EQ(seg(r, "k.codes") / (2 * 64) + fp.back(), 32 * (c + 1));
  }
  EXPECT_EQ(fp, (std::vector<int64_t>{0, 32, 64, 96, 128, 0, 32, 64, 96, 128, 0}));
}

TEST(KvqPolicy, FlushScheduleTokenByToken) {
  const auto m = model(1, 1, 16);
  auto p = policy(json{{"key", "kvq"}, {"value", "kvq"}}, m, 1);
  const int64_t T = 260;
  auto K = at::randn({1, 1, T, 16}), V = at::randn({1, 1, T, 16});
  int64_t max_fp = 0;
  for (int64_t c = 1; c <= T; ++c) {
    feed(*p, m, K, V, c - 1, 1);
    const int64_t fp = seg(p->memory(), "k.residual") / 16;
    ASSERT_EQ(fp, (c - 1) % 128) << "after call " << c;  // 0, 1..127, flush when 127 pending + 1
    max_fp = std::max(max_fp, fp);
  }
  EXPECT_EQ(max_fp, 127);
}

// Per-token groups with G >= D: one group per (token, head); bound s/2 + fp16 metadata rounding.
void expect_within_bound(const at::Tensor& got, const at::Tensor& want, int bits) {
  const double qmax = (1 << bits) - 1;
  auto range = (std::get<0>(want.max(-1, true)) - std::get<0>(want.min(-1, true))).to(at::kDouble);
  auto bound = range / qmax / 2 + (range + want.abs().amax(-1, true).to(at::kDouble)) * std::ldexp(1.0, -10) + 1e-6;
  auto err = (got.to(at::kDouble) - want.to(at::kDouble)).abs();
  EXPECT_TRUE((err <= bound).all().item<bool>()) << "max excess " << (err - bound).max().item<double>();
}

TEST(KvqPolicy, ChunkExactCacheWithinQuantizationBound) {
  const auto m = model(2, 2, 64);
  auto p = policy(json{{"key", "kvq"}, {"value", "kvq"}}, m, 2);  // K4 V2, G = 64 = D
  const int64_t T = 400;
  auto K = at::randn({2, 2, T, 64}) * 2, V = at::randn({2, 2, T, 64});
  int64_t pos = 0;
  for (int64_t n : {40, 1, 1, 17, 32, 32, 32, 32, 32, 32, 1, 100, 48}) {
    auto out = feed(*p, m, K, V, pos, n);
    const int64_t N = pos + n;
    ASSERT_EQ(out.k.size(2), N);
    EXPECT_EQ(out.n_cached, pos);
    EXPECT_TRUE(at::equal(out.key_pos, at::arange(N, at::kLong)));
    EXPECT_TRUE(at::equal(out.k.narrow(2, pos, n), K.narrow(2, pos, n)));
    EXPECT_TRUE(at::equal(out.v.narrow(2, pos, n), V.narrow(2, pos, n)));
    if (pos > 0) {
      expect_within_bound(out.k.narrow(2, 0, pos), K.narrow(2, 0, pos), 4);
      expect_within_bound(out.v.narrow(2, 0, pos), V.narrow(2, 0, pos), 2);
      EXPECT_FALSE(at::equal(out.k.narrow(2, 0, pos), K.narrow(2, 0, pos)));  // really quantized
    }
    pos = N;
  }
}

TEST(KvqPolicy, KeyOnlyQuantizationKeepsValuesExact) {
  const auto m = model(1, 2, 32);
  auto p = policy(json{{"key", {{"type", "kvq"}, {"bits", 4}}}, {"value", "none"}}, m, 1);
  auto K = at::randn({1, 2, 200, 32}), V = at::randn({1, 2, 200, 32});
  kvx::AttnInputs out;
  for (int c = 0; c < 10; ++c) out = feed(*p, m, K, V, 20 * c, 20);
  EXPECT_TRUE(at::equal(out.v, V));
  EXPECT_FALSE(at::equal(out.k, K));
  expect_within_bound(out.k, K, 4);
  const auto r = p->memory();
  EXPECT_EQ(seg(r, "v.codes"), 0);
  EXPECT_EQ(seg(r, "v.body_fp") + seg(r, "v.residual"), 2 * 32 * 200);
}

// ---- memory() against the closed formula ----------------------------------------------------

struct Side {
  int bits;
  int64_t group;
  bool channel;
  bool fp = false;
};

// Body block sizes and residual length after the chunks, by docs/methods/kvq.md, "The flush rule".
void kvq_schedule(const std::vector<int64_t>& chunks, int64_t R, bool requant, std::vector<int64_t>& blocks,
                  int64_t& resid) {
  bool started = false, open = false;
  blocks.clear();
  resid = 0;
  for (int64_t n : chunks) {
    if (!started) {
      blocks = {n};
      started = true;
    } else if (open && resid + 1 >= R) {
      if (requant) {
        int64_t all = resid + n;
        for (int64_t b : blocks) all += b;
        blocks = {all};
      } else {
        blocks.push_back(resid + n);
      }
      resid = 0;
      open = false;
    } else {
      resid += n;
      open = true;
    }
  }
}

int64_t side_bits(const Side& s, const std::vector<int64_t>& blocks, int64_t resid, int64_t B, int64_t H, int64_t D) {
  int64_t bits = 16 * B * H * D * resid;
  for (int64_t n : blocks) {
    if (s.fp) {
      bits += 16 * B * H * n * D;
      continue;
    }
    const int64_t codes = (B * H * n * D * s.bits + 7) / 8 * 8;
    const int64_t Gt = std::min(s.group, D);
    const int64_t groups = s.channel ? B * H * D * ((n + s.group - 1) / s.group) : B * H * n * ((D + Gt - 1) / Gt);
    bits += codes + 32 * groups;
  }
  return bits;
}

json side_spec(const Side& s) {
  if (s.fp) return "none";
  return {{"type", "kvq"}, {"bits", s.bits}, {"group", s.group}, {"axis", s.channel ? "channel" : "token"}};
}

TEST(KvqPolicy, MemoryEqualsClosedFormula) {
  struct Case {
    Side k, v;
    int64_t R;
    bool requant;
    std::vector<int64_t> chunks;
  };
  std::vector<int64_t> small(11, 7);
  small.insert(small.end(), 5, 1);
  const std::vector<Case> cases = {
      {{4, 64, false}, {2, 64, false}, 128, true, std::vector<int64_t>(7, 32)},
      {{2, 32, true}, {4, 32, false}, 64, true, {50, 50, 50, 13}},
      {{3, 48, false}, {3, 48, true}, 16, false, small},
      {{8, 100, true}, {1, 100, false}, 128, false, {5, 3, 130, 1, 1}},
      {{4, 64, false}, {16, 0, false, true}, 32, true, {10, 10, 10, 10, 10, 10}},
  };
  const int64_t L = 2, B = 1, H = 2, D = 64;
  const auto m = model(L, H, D);
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const auto& c = cases[ci];
    json spec{{"key", side_spec(c.k)},
              {"value", side_spec(c.v)},
              {"policy", {{"type", "segments"}, {"residual_length", c.R}, {"flush", c.requant ? "requantize_all" : "append"}}}};
    auto p = policy(spec, m, B);
    int64_t T = 0;
    for (int64_t n : c.chunks) T += n;
    auto K = at::randn({B, H, T, D}), V = at::randn({B, H, T, D});
    int64_t pos = 0;
    for (int64_t n : c.chunks) {
      feed(*p, m, K, V, pos, n);
      pos += n;
    }
    std::vector<int64_t> blocks;
    int64_t resid;
    kvq_schedule(c.chunks, c.R, c.requant, blocks, resid);
    const int64_t want = L * (side_bits(c.k, blocks, resid, B, H, D) + side_bits(c.v, blocks, resid, B, H, D));
    const auto r = p->memory();
    EXPECT_EQ(r.device_bits(), want) << "case " << ci;
    EXPECT_EQ(r.device_bytes(), (want + 7) / 8) << "case " << ci;
    EXPECT_EQ(r.tokens_seen, T);
  }
}

TEST(SegmentsPolicy, SinkTokensStayExact) {
  const auto m = model(1, 1, 32);
  auto p = policy(json{{"key", "kvq"}, {"value", "kvq"}, {"policy", {{"type", "segments"}, {"sink", 4}}}}, m, 1);
  auto K = at::randn({1, 1, 60, 32}), V = at::randn({1, 1, 60, 32});
  kvx::AttnInputs out;
  for (int c = 0; c < 20; ++c) out = feed(*p, m, K, V, 3 * c, 3);
  EXPECT_TRUE(at::equal(out.k.narrow(2, 0, 4), K.narrow(2, 0, 4)));
  EXPECT_TRUE(at::equal(out.v.narrow(2, 0, 4), V.narrow(2, 0, 4)));
  EXPECT_EQ(seg(p->memory(), "k.sink"), 4 * 32);
}

// ---- selective_int8 and sink_window (docs/methods/selective_int8.md, sink_window.md) -----------

TEST(SelectiveInt8, LayoutS2W3N10) {
  const int64_t B = 1, H = 2, D = 8;
  const auto m = model(1, H, D);
  auto p = policy(json{{"policy", {{"type", "selective_int8"}, {"sink_size", 2}, {"window_size", 3}}}}, m, B);
  auto K = at::randn({B, H, 12, D}), V = at::randn({B, H, 12, D});
  feed(*p, m, K, V, 0, 10);
  auto r = p->memory();
  EXPECT_EQ(seg(r, "k.sink"), 2 * B * H * D);      // {0, 1}
  EXPECT_EQ(seg(r, "k.codes"), 5 * B * H * D);     // {2..6} int8
  EXPECT_EQ(seg(r, "k.scales"), 5 * B * H);        // fp32 per (token, head)
  EXPECT_EQ(seg(r, "k.residual"), 3 * B * H * D);  // {7, 8, 9}
  EXPECT_EQ(r.device_bits(), 2 * (16 * 5 * B * H * D + 8 * 5 * B * H * D + 32 * 5 * B * H));

  auto out = feed(*p, m, K, V, 10, 1);
  ASSERT_EQ(out.k.size(2), 11);
  for (int64_t t : {0, 1, 7, 8, 9, 10}) {
    EXPECT_TRUE(at::equal(out.k.narrow(2, t, 1), K.narrow(2, t, 1))) << t;
    EXPECT_TRUE(at::equal(out.v.narrow(2, t, 1), V.narrow(2, t, 1))) << t;
  }
  auto body = out.k.narrow(2, 2, 5), orig = K.narrow(2, 2, 5);
  auto bound = orig.abs().amax(-1, true) / 127 / 2 + 1e-6;
  EXPECT_TRUE(((body - orig).abs() <= bound).all().item<bool>());
  EXPECT_FALSE(at::equal(body, orig));
  r = p->memory();
  EXPECT_EQ(seg(r, "k.codes"), 6 * B * H * D);  // token 7 left the window into int8
  EXPECT_EQ(seg(r, "k.residual"), 3 * B * H * D);
}

TEST(SelectiveInt8, TokenByTokenEqualsLayoutFormula) {
  const int64_t S = 3, W = 4, D = 8;
  const auto m = model(2, 1, D);
  auto p = policy(json{{"policy", {{"type", "selective_int8"}, {"sink_size", S}, {"window_size", W}}}}, m, 1);
  auto K = at::randn({1, 1, 30, D}), V = at::randn({1, 1, 30, D});
  for (int64_t N = 1; N <= 30; ++N) {
    feed(*p, m, K, V, N - 1, 1);
    const auto r = p->memory();
    const int64_t sink = std::min(N, S), win = std::min(std::max<int64_t>(N - S, 0), W);
    EXPECT_EQ(seg(r, "k.sink"), 2 * sink * D);  // 2 layers
    EXPECT_EQ(seg(r, "k.residual"), 2 * win * D);
    EXPECT_EQ(seg(r, "k.codes"), 2 * (N - sink - win) * D);
  }
}

std::set<int64_t> visible(const kvx::AttnInputs& a, int64_t p) {
  std::set<int64_t> out;
  auto kp = a.key_pos.contiguous();
  for (int64_t i = 0; i < kp.numel(); ++i) {
    const int64_t pos = kp.data_ptr<int64_t>()[i];
    const bool in_window = a.window < 0 || pos < a.sink || p - pos < a.window;
    if (pos == -1 || (pos <= p && in_window)) out.insert(pos);
  }
  return out;
}

TEST(SinkWindow, WorkedExampleS2W3) {
  const int64_t B = 1, H = 2, D = 8;
  const auto m = model(2, H, D);
  auto p = policy(json{{"policy", {{"type", "sink_window"}, {"sink_size", 2}, {"window_size", 3}}}}, m, B);
  auto K = at::randn({B, H, 15, D}), V = at::randn({B, H, 15, D});
  feed(*p, m, K, V, 0, 10);
  EXPECT_EQ(p->memory().tokens_kept, 5);  // {0, 1, 7, 8, 9}
  EXPECT_EQ(p->memory().device_bits(), 2 * 2 * 16 * 5 * B * H * D);

  auto out = feed(*p, m, K, V, 10, 4);
  EXPECT_TRUE(at::equal(out.key_pos, at::tensor(std::vector<int64_t>{0, 1, 7, 8, 9, 10, 11, 12, 13})));
  EXPECT_EQ(out.n_cached, 5);
  EXPECT_EQ(out.sink, 2);
  EXPECT_EQ(out.window, 3);
  EXPECT_EQ(visible(out, 10), (std::set<int64_t>{0, 1, 8, 9, 10}));
  EXPECT_EQ(visible(out, 13), (std::set<int64_t>{0, 1, 11, 12, 13}));
  auto kp = out.key_pos.contiguous();
  for (int64_t i = 0; i < kp.numel(); ++i) {
    const int64_t pos = kp.data_ptr<int64_t>()[i];
    EXPECT_TRUE(at::equal(out.k.narrow(2, i, 1), K.narrow(2, pos, 1))) << pos;
    EXPECT_TRUE(at::equal(out.v.narrow(2, i, 1), V.narrow(2, pos, 1))) << pos;
  }
  const auto r = p->memory();
  EXPECT_EQ(r.tokens_kept, 5);  // {0, 1, 11, 12, 13}
  EXPECT_EQ(r.tokens_seen, 14);
  EXPECT_EQ(seg(r, "k.window"), 2 * 3 * B * H * D);
  out = feed(*p, m, K, V, 14, 1);
  EXPECT_TRUE(at::equal(out.key_pos, at::tensor(std::vector<int64_t>{0, 1, 11, 12, 13, 14})));
}

TEST(SinkWindow, ChunkedEqualsStreamingVisibility) {
  // Every query of a chunk sees exactly the sinks and the last W positions up to itself.
  const int64_t S = 2, W = 5;
  const auto m = model(1, 1, 4);
  auto p = policy(json{{"policy", {{"type", "sink_window"}, {"sink_size", S}, {"window_size", W}}}}, m, 1);
  auto K = at::randn({1, 1, 40, 4}), V = at::randn({1, 1, 40, 4});
  int64_t pos = 0;
  for (int64_t n : {7, 1, 9, 3, 12, 8}) {
    auto out = feed(*p, m, K, V, pos, n);
    for (int64_t q = pos; q < pos + n; ++q) {
      std::set<int64_t> want;
      for (int64_t j = 0; j <= q; ++j)
        if (j < S || q - j < W) want.insert(j);
      EXPECT_EQ(visible(out, q), want) << "query " << q;
    }
    pos += n;
  }
}

}  // namespace

// The working view (each block decoded once, the view kept between calls) returns exactly what
// decoding the whole store afresh and concatenating returns: the path taken with gradients on,
// used here as the independent reference. Every flush rule, sinks, chunk sizes that straddle the
// sink and the flush points, and a third policy that alternates the two paths (the view must be
// rebuilt after an update that went around it).
TEST(SegmentsPolicy, WorkingViewEqualsFreshDecode) {
  const auto m = model(2, 2, 64);
  const std::vector<json> specs = {
      json::parse(R"({"key":{"type":"kvq","bits":4},"value":{"type":"kvq","bits":2},"policy":{"type":"segments","residual_length":16,"sink":3}})"),
      json::parse(R"({"key":{"type":"kvq","bits":2,"axis":"channel","group":8},"value":{"type":"kvq","bits":4},"policy":{"type":"segments","residual_length":16,"flush":"append"}})"),
      json::parse(R"({"key":{"type":"kvq","bits":3},"value":{"type":"kvq","bits":3},"policy":{"type":"segments","residual_length":12,"sink":4,"flush":"sliding"}})"),
      kvx::parse_method_shorthand("selective_int8:s2:w10")};
  for (const auto& spec : specs) {
    auto view = policy(spec, m, 2), fresh = policy(spec, m, 2), mixed = policy(spec, m, 2);
    const int64_t T = 256;
    auto K = at::randn({2, 2, T, 64}), V = at::randn({2, 2, T, 64});
    int64_t pos = 0, call = 0;
    for (int64_t n : {2, 1, 5, 1, 1, 16, 32, 1, 1, 1, 40, 7, 15, 1, 33, 1, 43}) {
      kvx::StepInfo s;
      s.pos0 = pos;
      s.n_new = n;
      for (int l = 0; l < m.n_layers; ++l) {
        const auto k = K.narrow(2, pos, n), v = V.narrow(2, pos, n);
        const auto kg = k.detach().requires_grad_(true), vg = v.detach().requires_grad_(true);
        const auto a = view->update(l, k, v, s);
        const auto b = fresh->update(l, kg, vg, s);
        const auto c = call % 3 == 1 ? mixed->update(l, kg, vg, s) : mixed->update(l, k, v, s);
        const std::string what = spec.dump() + " at position " + std::to_string(pos);
        ASSERT_EQ(a.k.size(2), pos + n) << what;
        EXPECT_TRUE(at::equal(a.k, b.k.detach()) && at::equal(a.v, b.v.detach())) << what;
        EXPECT_TRUE(at::equal(c.k.detach(), b.k.detach()) && at::equal(c.v.detach(), b.v.detach())) << what;
      }
      for (auto* p : {view.get(), fresh.get(), mixed.get()}) p->end_step(s);
      pos += n;
      ++call;
    }
  }
}
