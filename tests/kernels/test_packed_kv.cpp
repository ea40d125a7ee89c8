// Packed-KV kernels: the CPU reference against ALGORITHMS.md's worked examples and an
// independent naive attention; the CUDA kernels against the CPU reference (skipped without CUDA).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/kernels/packed_kv.h"

namespace kk = kvx::kernels;

namespace {

// Codes of a block in [token][channel] order, read as packed_kv.h documents the words (restated
// here, not taken from packed_layout.h): keys pair channels 2j, 2j + 1 at one bit of the two
// half-words; values swap half-words between tokens 2u and 2u + 1 (an odd last token plain).
std::vector<int> unpack_codes(const kk::PackedBlock& b) {
  auto c = b.codes.to(at::kCPU).contiguous();
  const int cpw = 32 / b.bits;
  const int64_t T = c.size(2), W = c.size(3), D = W * cpw;
  const auto* p = reinterpret_cast<const uint32_t*>(c.data_ptr<int32_t>());
  std::vector<int> out;
  for (int64_t bh = 0; bh < c.size(0) * c.size(1); ++bh)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < D; ++d) {
        const int i = int(d % cpw);
        int64_t row = t;
        int bit = i * b.bits;
        if (b.per_channel) {
          const int pair = i >> 1;  // byte pair % 2 of the half-word, code pair / 2 of the byte
          bit = 16 * (i & 1) + 8 * (pair & 1) + b.bits * (pair >> 1);
        } else if (t + 1 < T || t % 2 == 1) {  // in a token pair
          row = t - t % 2 + bit / 16;
          bit = 16 * int(t % 2) + bit % 16;
        }
        out.push_back(int((p[(bh * T + row) * W + d / cpw] >> bit) & ((1u << b.bits) - 1)));
      }
  return out;
}

}  // namespace

// ALGORITHMS.md 4.7, per-token, b = 4, G = 4 (padded with a zero group to fill a 32-bit word).
TEST(PackedKVRef, WorkedExamplePerToken4Bit) {
  auto x = at::tensor({0.10f, -0.50f, 0.90f, 0.30f, 2.00f, 1.00f, -1.00f, 0.45f}).view({1, 1, 1, 8});
  auto b = kk::ref::quantize_pack(x, 4, 4, false);
  auto codes = unpack_codes(b);
  EXPECT_EQ(codes, (std::vector<int>{6, 0, 15, 9, 15, 10, 0, 7}));
  auto y = kk::ref::dequantize(b, at::kFloat).flatten();
  const float want[] = {0.06f, -0.50f, 0.90f, 0.34f, 2.0f, 1.0f, -1.0f, 0.40f};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(y[i].item<float>(), want[i], 2e-3) << i;  // fp16 scales
}

// Same vector, b = 2 (16 channels so that codes fill one word; the extra groups are zeros).
TEST(PackedKVRef, WorkedExamplePerToken2Bit) {
  auto x = at::zeros({1, 1, 1, 16});
  x.flatten().narrow(0, 0, 8).copy_(at::tensor({0.10f, -0.50f, 0.90f, 0.30f, 2.00f, 1.00f, -1.00f, 0.45f}));
  auto b = kk::ref::quantize_pack(x, 2, 4, false);
  auto codes = unpack_codes(b);
  EXPECT_EQ(std::vector<int>(codes.begin(), codes.begin() + 8), (std::vector<int>{1, 0, 3, 2, 3, 2, 0, 1}));
  auto y = kk::ref::dequantize(b, at::kFloat).flatten();
  const float want[] = {-0.033333f, -0.5f, 0.9f, 0.433333f, 2.f, 1.f, -1.f, 0.f};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(y[i].item<float>(), want[i], 2e-3) << i;
}

// Per-channel, 4 tokens x 2 channels, b = 2, G = 4 (channels 2..15 are zero padding).
TEST(PackedKVRef, WorkedExamplePerChannel) {
  auto x = at::zeros({1, 1, 4, 16});
  x.select(3, 0).copy_(at::tensor({1.f, 2.f, 3.f, 4.f}).view({1, 1, 4}));
  x.select(3, 1).copy_(at::tensor({-1.f, 0.5f, 0.2f, 0.f}).view({1, 1, 4}));
  auto b = kk::ref::quantize_pack(x, 2, 4, true);
  auto codes = unpack_codes(b);  // token-major, 16 codes per token
  for (int t = 0; t < 4; ++t) {
    EXPECT_EQ(codes[t * 16 + 0], t);
    EXPECT_EQ(codes[t * 16 + 1], (std::vector<int>{0, 3, 2, 2})[t]);
  }
  auto y = kk::ref::dequantize(b, at::kFloat);
  const float ch1[] = {-1.f, 0.5f, 0.f, 0.f};
  for (int t = 0; t < 4; ++t) {
    EXPECT_NEAR(y[0][0][t][0].item<float>(), float(t + 1), 1e-3);
    EXPECT_NEAR(y[0][0][t][1].item<float>(), ch1[t], 1e-3);
  }
}

// The key layout word by word: channel c alone at code 3 lands at the documented bit.
TEST(PackedKVRef, KeyCodeBits) {
  const std::vector<std::pair<int, std::vector<int>>> want = {
      {2, {0, 16, 8, 24, 2, 18, 10, 26, 4, 20, 12, 28, 6, 22, 14, 30}},
      {4, {0, 16, 8, 24, 4, 20, 12, 28}},
      {8, {0, 16, 8, 24}}};
  for (const auto& [bits, bit_of] : want)
    for (int c = 0; c < int(bit_of.size()); ++c) {
      auto x = at::zeros({1, 1, 2, 32 / bits});
      x[0][0][0][c] = float((1 << bits) - 1);  // one group of 2 tokens: scale 1, min 0
      auto b = kk::ref::quantize_pack(x, bits, 2, true);
      const uint32_t w = uint32_t(b.codes[0][0][0][0].item<int32_t>());
      EXPECT_EQ(w, uint32_t((1u << bits) - 1) << bit_of[c]) << bits << " bits, channel " << c;
    }
}

// The value layout for three tokens of 16 channels at 2 bits, groups of 8 channels: plain words
// (code i at bit 2i) 0xE4E4E4E4, 0x05AFFA50, 0x1B1B1B1B; tokens 0 and 1 swap half-words, token 2
// stays plain; the statistics are group-major.
TEST(PackedKVRef, ValueTokenPairsAndGroupMajorStats) {
  auto x = at::empty({1, 1, 3, 16});
  for (int c = 0; c < 16; ++c) {
    x[0][0][0][c] = float(c % 4);
    x[0][0][1][c] = c < 8 ? float(c / 2 % 4) : float(13 - c / 2 % 4);  // group 1: codes 3..0 above a min of 10
    x[0][0][2][c] = float(3 - c % 4);
  }
  auto b = kk::ref::quantize_pack(x, 2, 8, false);
  auto w = [&](int t) { return uint32_t(b.codes[0][0][t][0].item<int32_t>()); };
  EXPECT_EQ(w(0), 0xFA50E4E4u);
  EXPECT_EQ(w(1), 0x05AFE4E4u);
  EXPECT_EQ(w(2), 0x1B1B1B1Bu);
  ASSERT_EQ(b.minv.sizes(), at::IntArrayRef({1, 1, 2, 3}));  // [B, H, D/G, T]
  EXPECT_EQ(b.minv[0][0][1][1].item<float>(), 10.f);
  EXPECT_EQ(b.minv[0][0][0][2].item<float>(), 0.f);
  EXPECT_TRUE(at::allclose(kk::ref::dequantize(b, at::kFloat), x));
  kk::PackedBlock odd = b;
  EXPECT_THROW(kk::concat(odd, b), std::exception);  // would pair token 2 with the next block's first
}

TEST(PackedKVRef, RoundTripErrorWithinHalfScale) {
  at::manual_seed(1);
  for (int bits : {2, 4, 8})
    for (bool pc : {false, true})
      for (int g : {32, 64, 128}) {
        auto x = at::randn({2, 3, 128, 128});
        auto b = kk::ref::quantize_pack(x, bits, g, pc);
        auto y = kk::ref::dequantize(b, at::kFloat);
        // scale per element, broadcast back to [B, H, T, D]
        auto s = b.scale.to(at::kFloat);
        s = pc ? s.repeat_interleave(g, 2) : s.transpose(2, 3).repeat_interleave(std::min(g, 128), 3);
        auto excess = ((x - y).abs() - s / 2).max().item<float>();
        // fp16 storage of scale and min adds at most a few ulps of the group's range
        EXPECT_LT(excess, 2e-3 * x.abs().max().item<float>()) << bits << " " << pc << " " << g;
      }
}

// Independent attention: scalar loops in double over the dequantized cache.
TEST(PackedKVRef, DecodeAttentionMatchesNaiveLoops) {
  at::manual_seed(2);
  const int B = 2, Hkv = 2, rep = 3, D = 128, T = 64, R = 5;
  auto q = at::randn({B, Hkv * rep, D});
  auto k = kk::ref::quantize_pack(at::randn({B, Hkv, T, D}), 4, 32, true);
  auto v = kk::ref::quantize_pack(at::randn({B, Hkv, T, D}), 2, 32, false);
  auto kr = at::randn({B, Hkv, R, D}), vr = at::randn({B, Hkv, R, D});
  auto out = kk::ref::decode_attention(q, k, v, kr, vr, 1.0 / std::sqrt(double(D)));
  auto K = at::cat({kk::ref::dequantize(k, at::kFloat), kr}, 2), V = at::cat({kk::ref::dequantize(v, at::kFloat), vr}, 2);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hkv * rep; ++h) {
      std::vector<double> s(T + R);
      double mx = -1e300, sum = 0;
      for (int t = 0; t < T + R; ++t) {
        double acc = 0;
        for (int d = 0; d < D; ++d) acc += double(q[b][h][d].item<float>()) * K[b][h / rep][t][d].item<float>();
        s[t] = acc / std::sqrt(double(D));
        mx = std::max(mx, s[t]);
      }
      for (auto& x : s) sum += (x = std::exp(x - mx));
      for (int d = 0; d < D; d += 17) {
        double o = 0;
        for (int t = 0; t < T + R; ++t) o += s[t] / sum * V[b][h / rep][t][d].item<float>();
        EXPECT_NEAR(out[b][h][d].item<float>(), o, 1e-4);
      }
    }
}

#ifdef KVX_WITH_CUDA
TEST(PackedKVCuda, QuantizeMatchesReferenceExactly) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(3);
  for (int bits : {2, 4, 8})
    for (bool pc : {false, true})
      for (int g : {32, 64, 128}) {
        auto x = at::randn({2, 4, 256, 128}).to(at::kBFloat16).to(at::kFloat);
        auto c = kk::quantize_pack(x.cuda(), bits, g, pc);
        auto r = kk::ref::quantize_pack(x, bits, g, pc);
        EXPECT_TRUE(at::equal(c.codes.cpu(), r.codes)) << bits << pc << g;
        EXPECT_TRUE(at::equal(c.scale.cpu(), r.scale)) << bits << pc << g;
        EXPECT_TRUE(at::equal(c.minv.cpu(), r.minv)) << bits << pc << g;
        EXPECT_TRUE(at::allclose(kk::dequantize(c, at::kFloat).cpu(), kk::ref::dequantize(r, at::kFloat)));
      }
}

TEST(PackedKVCuda, FusedAttentionMatchesReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(4);
  int cases = 0;
  for (auto [bk, bv] : std::vector<std::pair<int, int>>{{2, 2}, {4, 4}, {8, 8}, {4, 2}, {2, 4}, {8, 2}, {2, 8}})
    for (int g : {32, 64, 128})
      for (int rep : {1, 2, 3, 4, 7, 8})
        for (auto [T, R] : std::vector<std::pair<int, int>>{{0, 33}, {g, 0}, {g * 3, 1}, {g * 37, 77}}) {
          const int B = 2, Hkv = 2, D = 128;
          auto q = at::randn({B, Hkv * rep, D}).cuda();
          kk::PackedBlock k, v;
          if (T > 0) {
            k = kk::quantize_pack(at::randn({B, Hkv, T, D}).cuda(), bk, g, true);
            v = kk::quantize_pack(at::randn({B, Hkv, T, D}).cuda(), bv, g, false);
          }
          at::Tensor kr, vr;
          if (R > 0) {
            kr = at::randn({B, Hkv, R, D}).to(at::kBFloat16).cuda();
            vr = at::randn({B, Hkv, R, D}).to(at::kBFloat16).cuda();
          }
          const double sc = 1.0 / std::sqrt(double(D));
          auto fused = kk::decode_attention(q, k, v, kr, vr, sc).cpu();
          auto cpu_k = k, cpu_v = v;
          if (T > 0) {
            cpu_k.codes = k.codes.cpu(); cpu_k.scale = k.scale.cpu(); cpu_k.minv = k.minv.cpu();
            cpu_v.codes = v.codes.cpu(); cpu_v.scale = v.scale.cpu(); cpu_v.minv = v.minv.cpu();
          }
          auto ref = kk::ref::decode_attention(q.cpu(), cpu_k, cpu_v, R > 0 ? kr.cpu() : kr, R > 0 ? vr.cpu() : vr, sc);
          EXPECT_LT((fused - ref).abs().max().item<float>(), 2e-3)
              << "bits " << bk << "/" << bv << " g " << g << " rep " << rep << " T " << T << " R " << R;
          ++cases;
        }
  std::printf("fused attention cases checked: %d\n", cases);
}

namespace {

// Max |fused - reference| for one cache; keys get per-channel magnitudes `kmag` (outlier channels
// as in real models) and the query a factor `qmag`. *bf16_err: what bf16 attention over the same
// dequantized cache (bf16 query, keys, values; fp32 math) is off from the reference by.
float fused_vs_ref(int B, int Hkv, int rep, int T, int R, int bk, int bv, int gk, int gv, float kmag_max, float qmag,
                   float* bf16_err = nullptr) {
  const int D = 128;
  auto chan = at::ones({D});
  if (kmag_max > 1.f) chan = at::linspace(1.f, kmag_max, D).index_select(0, at::randperm(D));
  auto q = (at::randn({B, Hkv * rep, D}) * qmag).cuda();
  auto k = kk::quantize_pack((at::randn({B, Hkv, T, D}) * chan).cuda(), bk, gk, true);
  auto v = kk::quantize_pack(at::randn({B, Hkv, T, D}).cuda(), bv, gv, false);
  at::Tensor kr, vr;
  if (R > 0) {
    kr = (at::randn({B, Hkv, R, D}) * chan).to(at::kBFloat16).cuda();
    vr = at::randn({B, Hkv, R, D}).to(at::kBFloat16).cuda();
  }
  const double sc = 1.0 / std::sqrt(double(D));
  auto fused = kk::decode_attention(q, k, v, kr, vr, sc).cpu();
  auto ck = k, cv = v;
  ck.codes = k.codes.cpu(); ck.scale = k.scale.cpu(); ck.minv = k.minv.cpu();
  cv.codes = v.codes.cpu(); cv.scale = v.scale.cpu(); cv.minv = v.minv.cpu();
  auto ref = kk::ref::decode_attention(q.cpu(), ck, cv, R > 0 ? kr.cpu() : kr, R > 0 ? vr.cpu() : vr, sc);
  if (bf16_err) {
    auto bf = [](const at::Tensor& x) { return x.to(at::kBFloat16).to(at::kFloat); };
    auto K = bf(kk::ref::dequantize(ck, at::kFloat)), V = bf(kk::ref::dequantize(cv, at::kFloat));
    if (R > 0) {
      K = at::cat({K, kr.cpu().to(at::kFloat)}, 2);
      V = at::cat({V, vr.cpu().to(at::kFloat)}, 2);
    }
    auto qg = bf(q.cpu()).view({B, Hkv, rep, D});
    auto o = at::matmul(at::softmax(at::matmul(qg, K.transpose(2, 3)) * sc, -1), V).reshape({B, Hkv * rep, D});
    *bf16_err = (o - ref).abs().max().item<float>();
  }
  return (fused - ref).abs().max().item<float>();
}

}  // namespace

// The kernel copies packed tensors in 16-byte chunks as they lie: a strided view is refused (it
// would otherwise need a copy on every decode step), naming what is wrong.
TEST(PackedKVCuda, FusedAttentionRefusesStridedPacking) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  auto k = kk::quantize_pack(at::randn({2, 2, 64, 128}).cuda(), 2, 32, true);
  auto v = kk::quantize_pack(at::randn({2, 2, 64, 128}).cuda(), 2, 32, false);
  k.codes = k.codes.transpose(0, 1).contiguous().transpose(0, 1);  // same values, strided
  try {
    kk::decode_attention(at::randn({2, 8, 128}).cuda(), k, v, at::Tensor(), at::Tensor(), 0.1);
    ADD_FAILURE() << "a strided packed tensor was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("packed key codes must be contiguous"), std::string::npos) << e.what();
  }
}

// Long contexts: many splits, many tiles per warp, value groups != key groups.
TEST(PackedKVCuda, FusedAttentionLongContext) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(5);
  for (auto [bk, bv] : std::vector<std::pair<int, int>>{{4, 4}, {2, 2}, {8, 4}})
    for (int gv : {32, 16}) {
      float err = fused_vs_ref(2, 2, 4, 64 * 150, 13, bk, bv, 64, gv, 1.f, 1.f);
      std::printf("long context bits %d/%d value group %d: max err %.2e\n", bk, bv, gv, err);
      EXPECT_LT(err, 2e-3) << bk << "/" << bv << " gv " << gv;
    }
}

// Real-model-like magnitudes: outlier key channels (x20) and a larger query (sharp softmax, where
// score errors show): the fused kernel must stay within bf16 tolerance, i.e. about as far from the
// fp32 reference as bf16 attention over the same cache is (measured: 0.3x to 1.1x of it).
TEST(PackedKVCuda, FusedAttentionOutlierChannels) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(6);
  for (auto [bk, bv] : std::vector<std::pair<int, int>>{{4, 4}, {2, 2}, {8, 8}})
    for (int rep : {1, 4})
      for (int gv : {128, 64}) {
        float bf16 = 0.f;
        float err = fused_vs_ref(2, 2, rep, 128 * 9, 40, bk, bv, 128, gv, 20.f, 3.f, &bf16);
        std::printf("outliers bits %d/%d rep %d value group %d: max err %.2e (bf16 attention: %.2e)\n", bk, bv, rep, gv,
                    err, bf16);
        EXPECT_LT(err, std::max(2e-3f, 2.f * bf16)) << bk << "/" << bv << " rep " << rep << " gv " << gv;
      }
}
#endif
