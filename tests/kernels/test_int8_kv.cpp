// Selective-int8 kernels: the CPU reference attention against an independent naive attention; the
// CUDA kernels against the CPU reference (skipped without CUDA). The int8 codec's CUDA path is
// tested in tests/cache/test_codec_cuda.cpp.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "core/cache/int8_absmax.h"
#include "core/kernels/int8_kv.h"

namespace kk = kvx::kernels;

namespace {

// A cache of S sinks, N int8 body tokens and W window tokens (`dt` sinks/window) on `dev`.
kk::SelectiveInt8Cache make_cache(int B, int Hkv, int S, int N, int W, at::ScalarType dt, at::Device dev) {
  const int D = 128;
  auto opt = at::TensorOptions().dtype(dt).device(dev);
  kk::SelectiveInt8Cache c;
  if (S > 0) {
    c.k_sink = at::randn({B, Hkv, S, D}).to(opt);
    c.v_sink = at::randn({B, Hkv, S, D}).to(opt);
  }
  if (N > 0) {
    c.k_body = kvx::int8_quantize(at::randn({B, Hkv, N, D}).to(dev));
    c.v_body = kvx::int8_quantize(at::randn({B, Hkv, N, D}).to(dev));
  }
  if (W > 0) {
    c.k_win = at::randn({B, Hkv, W, D}).to(opt);
    c.v_win = at::randn({B, Hkv, W, D}).to(opt);
  }
  return c;
}

kk::SelectiveInt8Cache to_cpu(kk::SelectiveInt8Cache c) {
  auto cpu = [](at::Tensor& t) {
    if (t.defined()) t = t.cpu();
  };
  for (at::Tensor* t : {&c.k_sink, &c.v_sink, &c.k_body.codes, &c.k_body.scale, &c.v_body.codes, &c.v_body.scale,
                        &c.k_win, &c.v_win})
    cpu(*t);
  return c;
}

// Key or value j of (b, h) in cache order sinks, body, window, dequantized by hand.
double entry(const kk::SelectiveInt8Cache& c, bool key, int b, int h, int j, int d) {
  const at::Tensor& sink = key ? c.k_sink : c.v_sink;
  const kvx::Int8Block& body = key ? c.k_body : c.v_body;
  const at::Tensor& win = key ? c.k_win : c.v_win;
  const int S = sink.defined() ? int(sink.size(2)) : 0, N = int(body.tokens());
  if (j < S) return sink[b][h][j][d].item<double>();
  if (j < S + N) return double(body.codes[b][h][j - S][d].item<int8_t>()) * body.scale[b][h][j - S].item<float>();
  return win[b][h][j - S - N][d].item<double>();
}

}  // namespace

TEST(Int8KVRef, DecodeAttentionMatchesNaiveLoops) {
  at::manual_seed(12);
  const int B = 2, Hkv = 2, D = 128;
  for (int rep : {1, 3, 4})
    for (auto [S, N, W] : std::vector<std::tuple<int, int, int>>{{4, 29, 7}, {0, 13, 0}, {3, 0, 5}, {0, 0, 9}, {16, 1, 0}}) {
      auto c = make_cache(B, Hkv, S, N, W, at::kFloat, at::kCPU);
      auto q = at::randn({B, Hkv * rep, D});
      auto out = kk::ref::int8_decode_attention(q, c, 1.0 / std::sqrt(double(D)));
      const int T = S + N + W;
      for (int b = 0; b < B; ++b)
        for (int h = 0; h < Hkv * rep; ++h) {
          std::vector<double> s(size_t(T), 0.0);
          double mx = -1e300, sum = 0;
          for (int j = 0; j < T; ++j) {
            for (int d = 0; d < D; ++d) s[j] += q[b][h][d].item<double>() * entry(c, true, b, h / rep, j, d);
            s[j] /= std::sqrt(double(D));
            mx = std::max(mx, s[j]);
          }
          for (auto& x : s) sum += (x = std::exp(x - mx));
          for (int d = 0; d < D; d += 19) {
            double o = 0;
            for (int j = 0; j < T; ++j) o += s[j] / sum * entry(c, false, b, h / rep, j, d);
            EXPECT_NEAR(out[b][h][d].item<float>(), o, 1e-4) << "rep " << rep << " S " << S << " N " << N << " W " << W;
          }
        }
    }
}

TEST(Int8KVRef, EmptyCacheIsAnError) {
  kk::SelectiveInt8Cache c;
  EXPECT_ANY_THROW(kk::int8_decode_attention(at::randn({1, 2, 128}), c, 0.1));
}

// Every GQA ratio compiled, odd lengths, sink/window sizes from none to several splits, both dtypes.
TEST(Int8KVCuda, FusedAttentionMatchesReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(14);
  int cases = 0;
  for (auto dt : {at::kBFloat16, at::kHalf})
    for (int rep : {1, 2, 3, 4, 7, 8})
      for (auto [S, N, W] : std::vector<std::tuple<int, int, int>>{
               {0, 0, 33}, {16, 0, 0}, {0, 1, 0}, {4, 1, 1}, {16, 517, 32}, {1, 4099, 63}, {64, 37 * 128 + 5, 700}}) {
        const int B = 2, Hkv = 2, D = 128;
        auto c = make_cache(B, Hkv, S, N, W, dt, at::kCUDA);
        auto q = at::randn({B, Hkv * rep, D}).to(dt).cuda();
        const double sc = 1.0 / std::sqrt(double(D));
        auto fused = kk::int8_decode_attention(q, c, sc).cpu();
        auto ref = kk::ref::int8_decode_attention(q.cpu(), to_cpu(c), sc);
        EXPECT_LT((fused - ref).abs().max().item<float>(), 2e-3)
            << "dtype " << dt << " rep " << rep << " S " << S << " N " << N << " W " << W;
        ++cases;
      }
  std::printf("int8 fused attention cases checked: %d\n", cases);
}

// Long context (many splits and tiles per warp), a float32 query, and sinks/window given as
// token ranges narrowed out of one larger buffer (non-contiguous over heads).
TEST(Int8KVCuda, FusedAttentionLongContextAndViews) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(15);
  const int B = 3, Hkv = 4, rep = 4, D = 128, S = 16, N = 20000, W = 48;
  auto c = make_cache(B, Hkv, 0, N, 0, at::kBFloat16, at::kCUDA);
  auto kbuf = at::randn({B, Hkv, S + W + 7, D}).to(at::kBFloat16).cuda();
  auto vbuf = at::randn({B, Hkv, S + W + 7, D}).to(at::kBFloat16).cuda();
  c.k_sink = kbuf.narrow(2, 0, S);
  c.v_sink = vbuf.narrow(2, 0, S);
  c.k_win = kbuf.narrow(2, S + 3, W);
  c.v_win = vbuf.narrow(2, S + 3, W);
  auto q = at::randn({B, Hkv * rep, D}).cuda();
  const double sc = 1.0 / std::sqrt(double(D));
  auto err = (kk::int8_decode_attention(q, c, sc).cpu() - kk::ref::int8_decode_attention(q.cpu(), to_cpu(c), sc))
                 .abs().max().item<float>();
  std::printf("int8 long context: max err %.2e\n", err);
  EXPECT_LT(err, 2e-3);
}
