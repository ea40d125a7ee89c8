// Selective-int8 kernels: the CPU reference attention against an independent naive attention; the
// CUDA kernels against the CPU reference (skipped without CUDA). The int8 codec's CUDA path is
// tested in tests/cache/test_codec_cuda.cpp.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "core/kernels/int8_kv.h"

namespace kk = kvx::kernels;

namespace {

// int8 absmax rows of x (docs/methods/selective_int8.md), written out here: a = max|x|, s = a/127,
// q = round(x/s).
kk::Int8Rows int8_rows(const at::Tensor& x) {
  auto s = x.abs().amax(-1).clamp_min(1e-8) / 127.0;
  return {(x / s.unsqueeze(-1)).round().clamp(-127, 127).to(at::kChar), s.to(at::kFloat)};
}

// A cache of S sinks, N int8 body tokens and W window tokens (`dt` sinks/window) on `dev`; the
// window's last n tokens are the queries' own.
struct Cache {
  kk::FpSegment sink, win;
  kk::Int8Rows k, v;
};
Cache make_cache(int B, int Hkv, int S, int N, int W, at::ScalarType dt, at::Device dev) {
  const int D = 128;
  auto opt = at::TensorOptions().dtype(dt).device(dev);
  Cache c;
  if (S > 0) c.sink = {at::randn({B, Hkv, S, D}).to(opt), at::randn({B, Hkv, S, D}).to(opt)};
  if (N > 0) {
    c.k = int8_rows(at::randn({B, Hkv, N, D}).to(dev));
    c.v = int8_rows(at::randn({B, Hkv, N, D}).to(dev));
  }
  c.win = {at::randn({B, Hkv, W, D}).to(opt), at::randn({B, Hkv, W, D}).to(opt)};
  return c;
}

Cache to_cpu(Cache c) {
  for (at::Tensor* t : {&c.sink.k, &c.sink.v, &c.win.k, &c.win.v, &c.k.codes, &c.k.scale, &c.v.codes, &c.v.scale})
    if (t->defined()) *t = t->cpu();
  return c;
}

at::Tensor attend(const at::Tensor& q, const Cache& c, double scale, bool reference) {
  const kk::Int8Rows* k = c.k.tokens() > 0 ? &c.k : nullptr;
  const kk::Int8Rows* v = c.v.tokens() > 0 ? &c.v : nullptr;
  return reference ? kk::ref::int8_attention(q, k, v, c.sink, c.win, scale) : kk::int8_attention(q, k, v, c.sink, c.win, scale);
}

// Key or value j of (b, h) in cache order sinks, body, window, dequantized by hand.
double entry(const Cache& c, bool key, int b, int h, int j, int d) {
  const at::Tensor& sink = key ? c.sink.k : c.sink.v;
  const kk::Int8Rows& body = key ? c.k : c.v;
  const at::Tensor& win = key ? c.win.k : c.win.v;
  const int S = sink.defined() ? int(sink.size(2)) : 0, N = int(body.tokens());
  if (j < S) return sink[b][h][j][d].item<double>();
  if (j < S + N) return double(body.codes[b][h][j - S][d].item<int8_t>()) * body.scale[b][h][j - S].item<float>();
  return win[b][h][j - S - N][d].item<double>();
}

}  // namespace

TEST(Int8KVRef, AttentionMatchesNaiveLoops) {
  at::manual_seed(12);
  const int B = 2, Hkv = 2, D = 128;
  for (int rep : {1, 3})
    for (int n : {1, 4})
      for (auto [S, N, W] : std::vector<std::tuple<int, int, int>>{{4, 29, 7}, {0, 13, 4}, {3, 0, 5}, {0, 0, 9}, {16, 1, 4}}) {
        auto c = make_cache(B, Hkv, S, N, W, at::kFloat, at::kCPU);
        auto q = at::randn({B, Hkv * rep, n, D});
        auto out = attend(q, c, 1.0 / std::sqrt(double(D)), true);
        const int T = S + N + W;
        for (int b = 0; b < B; ++b)
          for (int h = 0; h < Hkv * rep; ++h)
            for (int i = 0; i < n; ++i) {
              const int visible = T - n + i + 1;
              std::vector<double> s(size_t(visible), 0.0);
              double mx = -1e300, sum = 0;
              for (int j = 0; j < visible; ++j) {
                for (int d = 0; d < D; ++d) s[j] += q[b][h][i][d].item<double>() * entry(c, true, b, h / rep, j, d);
                s[j] /= std::sqrt(double(D));
                mx = std::max(mx, s[j]);
              }
              for (auto& x : s) sum += (x = std::exp(x - mx));
              for (int d = 0; d < D; d += 19) {
                double o = 0;
                for (int j = 0; j < visible; ++j) o += s[j] / sum * entry(c, false, b, h / rep, j, d);
                EXPECT_NEAR(out[b][h][i][d].item<float>(), o, 1e-4)
                    << "rep " << rep << " n " << n << " S " << S << " N " << N << " W " << W;
              }
            }
      }
}

TEST(Int8KVRef, EmptyCacheIsAnError) {
  EXPECT_ANY_THROW(kk::int8_attention(at::randn({1, 2, 1, 128}), nullptr, nullptr, {}, {}, 0.1));
}

// GQA ratios up to 16, decode steps and chunks, odd lengths, sink/window sizes from none to several
// splits, both dtypes.
TEST(Int8KVCuda, FusedAttentionMatchesReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(14);
  int cases = 0;
  for (auto dt : {at::kBFloat16, at::kHalf})
    for (int rep : {1, 3, 4, 8, 16})
      for (int n : {1, 32})
        for (auto [S, N, W] : std::vector<std::tuple<int, int, int>>{
                 {0, 0, 33}, {16, 0, 32}, {0, 1, 32}, {4, 1, 33}, {16, 517, 32}, {1, 4099, 63}, {64, 37 * 128 + 5, 700}}) {
          const int B = 2, Hkv = 2, D = 128;
          auto c = make_cache(B, Hkv, S, N, W, dt, at::kCUDA);
          auto q = at::randn({B, Hkv * rep, n, D}).to(dt).cuda();
          const double sc = 1.0 / std::sqrt(double(D));
          auto fused = attend(q, c, sc, false).cpu();
          auto ref = attend(q.cpu(), to_cpu(c), sc, true);
          EXPECT_LT((fused - ref).abs().max().item<float>(), 2e-3)
              << "dtype " << dt << " rep " << rep << " n " << n << " S " << S << " N " << N << " W " << W;
          ++cases;
        }
  std::printf("int8 fused attention cases checked: %d\n", cases);
}

// Long context (many splits and tiles per warp), a float32 query, and a body, sinks and window given
// as token ranges narrowed out of larger buffers (as the cache's stores hold them).
TEST(Int8KVCuda, FusedAttentionLongContextAndViews) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(15);
  const int B = 3, Hkv = 4, rep = 4, D = 128, S = 16, N = 20000, W = 48;
  Cache c;
  auto body_k = int8_rows(at::randn({B, Hkv, N + 100, D}).cuda()), body_v = int8_rows(at::randn({B, Hkv, N + 100, D}).cuda());
  c.k = {body_k.codes.narrow(2, 0, N), body_k.scale.narrow(2, 0, N)};
  c.v = {body_v.codes.narrow(2, 0, N), body_v.scale.narrow(2, 0, N)};
  auto kbuf = at::randn({B, Hkv, S + W + 7, D}).to(at::kBFloat16).cuda();
  auto vbuf = at::randn({B, Hkv, S + W + 7, D}).to(at::kBFloat16).cuda();
  c.sink = {kbuf.narrow(2, 0, S), vbuf.narrow(2, 0, S)};
  c.win = {kbuf.narrow(2, S + 3, W), vbuf.narrow(2, S + 3, W)};
  for (int n : {1, 16}) {
    auto q = at::randn({B, Hkv * rep, n, D}).cuda();
    const double sc = 1.0 / std::sqrt(double(D));
    auto err = (attend(q, c, sc, false).cpu() - attend(q.cpu(), to_cpu(c), sc, true)).abs().max().item<float>();
    std::printf("int8 long context n %d: max err %.2e\n", n, err);
    EXPECT_LT(err, 2e-3);
  }
}
