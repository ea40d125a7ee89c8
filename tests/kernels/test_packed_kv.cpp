// Packed-KV kernels: the CPU reference against docs/methods/kvq.md's worked examples and an
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
// here, not taken from packed_layout.h): the key layout pairs channels 2j, 2j + 1 at one bit of
// the two half-words; the value layout swaps half-words between tokens 2u and 2u + 1 (an odd last
// token plain); per-token keys of 128 channels put channel 16S + 4t + j at position 32t + 4S + j.
std::vector<int> unpack_codes(const kk::PackedBlock& b) {
  auto c = b.codes.to(at::kCPU).contiguous();
  const int cpw = 32 / b.bits;
  const int64_t T = c.size(2), W = c.size(3), D = W * cpw;
  const auto* p = reinterpret_cast<const uint32_t*>(c.data_ptr<int32_t>());
  std::vector<int> out;
  for (int64_t bh = 0; bh < c.size(0) * c.size(1); ++bh)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t ch = 0; ch < D; ++ch) {
        const bool permuted = b.key_layout && !b.per_channel && D == 128;
        const int64_t d = permuted ? 32 * ((ch % 16) / 4) + 4 * (ch / 16) + ch % 4 : ch;  // its position
        const int i = int(d % cpw);
        int64_t row = t;
        int bit = i * b.bits;
        if (b.key_layout) {
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

// Empty capacity buffers of `cap` tokens for blocks of this configuration on `dev`.
kk::PackedBlock capacity_block(int64_t B, int64_t H, int64_t cap, int64_t D, int bits, int group, bool pc, bool kl,
                               at::Device dev) {
  return kk::empty_block(B, H, cap, D, bits, group, pc, kl, dev);
}
// The first T tokens of capacity buffers, as a block (views).
kk::PackedBlock first_tokens(const kk::PackedBlock& cap, int64_t T) {
  kk::PackedBlock b = cap;
  b.codes = cap.codes.narrow(2, 0, T);
  const int dim = cap.per_channel ? 2 : 3;
  const int64_t stats = cap.per_channel ? (T + cap.group - 1) / cap.group : T;
  b.scale = cap.scale.narrow(dim, 0, stats);
  b.minv = cap.minv.narrow(dim, 0, stats);
  return b;
}

kk::PackedBlock cpu(const kk::PackedBlock& b) {
  kk::PackedBlock c = b;
  if (b.codes.defined()) {
    c.codes = b.codes.cpu();
    c.scale = b.scale.cpu();
    c.minv = b.minv.cpu();
  }
  return c;
}

void expect_same_block(const kk::PackedBlock& a, const kk::PackedBlock& b, const std::string& what) {
  EXPECT_TRUE(at::equal(a.codes.cpu().contiguous(), b.codes.cpu().contiguous())) << what << ": codes";
  EXPECT_TRUE(at::equal(a.scale.cpu().contiguous(), b.scale.cpu().contiguous())) << what << ": scales";
  EXPECT_TRUE(at::equal(a.minv.cpu().contiguous(), b.minv.cpu().contiguous())) << what << ": mins";
}

}  // namespace

// docs/methods/kvq.md, worked example: per-token, b = 4, G = 4 (padded with a zero group to fill a
// 32-bit word).
TEST(PackedKVRef, WorkedExamplePerToken4Bit) {
  auto x = at::tensor({0.10f, -0.50f, 0.90f, 0.30f, 2.00f, 1.00f, -1.00f, 0.45f}).view({1, 1, 1, 8});
  auto b = kk::ref::quantize_pack(x, 4, 4, false, false);
  auto codes = unpack_codes(b);
  EXPECT_EQ(codes, (std::vector<int>{6, 0, 15, 9, 15, 10, 0, 7}));
  auto y = kk::ref::dequantize(b, at::kFloat).flatten();
  const float want[] = {0.06f, -0.50f, 0.90f, 0.34f, 2.0f, 1.0f, -1.0f, 0.40f};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(y[i].item<float>(), want[i], 2e-3) << i;  // fp16 scales
  // the key layout with per-token groups: the same codes and values, laid out as keys
  auto k = kk::ref::quantize_pack(x, 4, 4, false, true);
  EXPECT_EQ(unpack_codes(k), codes);
  EXPECT_TRUE(at::equal(kk::ref::dequantize(k, at::kFloat).flatten(), y));
}

// Same vector, b = 2 (16 channels so that codes fill one word; the extra groups are zeros).
TEST(PackedKVRef, WorkedExamplePerToken2Bit) {
  auto x = at::zeros({1, 1, 1, 16});
  x.flatten().narrow(0, 0, 8).copy_(at::tensor({0.10f, -0.50f, 0.90f, 0.30f, 2.00f, 1.00f, -1.00f, 0.45f}));
  auto b = kk::ref::quantize_pack(x, 2, 4, false, false);
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
  auto b = kk::ref::quantize_pack(x, 2, 4, true, true);
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
      auto b = kk::ref::quantize_pack(x, bits, 2, true, true);
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
  auto b = kk::ref::quantize_pack(x, 2, 8, false, false);
  auto w = [&](int t) { return uint32_t(b.codes[0][0][t][0].item<int32_t>()); };
  EXPECT_EQ(w(0), 0xFA50E4E4u);
  EXPECT_EQ(w(1), 0x05AFE4E4u);
  EXPECT_EQ(w(2), 0x1B1B1B1Bu);
  ASSERT_EQ(b.minv.sizes(), at::IntArrayRef({1, 1, 2, 3}));  // [B, H, D/G, T]
  EXPECT_EQ(b.minv[0][0][1][1].item<float>(), 10.f);
  EXPECT_EQ(b.minv[0][0][0][2].item<float>(), 0.f);
  EXPECT_TRUE(at::allclose(kk::ref::dequantize(b, at::kFloat), x));
}

// Per-token keys of 128 channels: the codes a direct per-token quantization gives, each channel at
// its permuted position, and decoding returns every channel where it was.
TEST(PackedKVRef, PerTokenKeysPermuteChannels) {
  at::manual_seed(8);
  auto x = at::randn({1, 2, 3, 128});
  for (int bits : {2, 4, 8})
    for (int G : {32, 64, 128}) {
      auto b = kk::ref::quantize_pack(x, bits, G, false, true);
      auto codes = unpack_codes(b);
      auto xv = x.view({6, 128 / G, G});
      auto lo = std::get<0>(xv.min(-1, true)), hi = std::get<0>(xv.max(-1, true));
      auto want = ((xv - lo) / ((hi - lo) / float((1 << bits) - 1))).round().clamp(0, (1 << bits) - 1).flatten();
      int wrong = 0;
      for (int i = 0; i < int(codes.size()); ++i) wrong += codes[i] != int(want[i].item<float>());
      EXPECT_LE(wrong, 2) << bits << " bits, groups of " << G;  // rounding ties of the fp32 division
      auto y = kk::ref::dequantize(b, at::kFloat);
      auto s = ((hi - lo) / float((1 << bits) - 1)).expand_as(xv).reshape_as(x);
      EXPECT_LT(((y - x).abs() - s / 2).max().item<float>(), 1e-3) << bits << " " << G;
    }
}

// Appending into capacity buffers piece by piece gives the block quantize_pack makes of the whole:
// the value layout re-pairs the token left alone by an odd length, per-channel groups start where
// the piece does (and the last may be short).
TEST(PackedKVRef, PackIntoAppendsLikeOneBlock) {
  at::manual_seed(7);
  for (int bits : {2, 4, 8})
    for (auto [pc, kl] : std::vector<std::pair<bool, bool>>{{false, false}, {false, true}, {true, true}}) {
      const int G = pc ? 32 : 64;
      const std::vector<int64_t> cuts = pc ? std::vector<int64_t>{0, 32, 96, 101} : std::vector<int64_t>{0, 3, 4, 9, 17};
      const int64_t T = cuts.back();
      auto x = at::randn({2, 3, T, 128});
      auto whole = kk::ref::quantize_pack(x, bits, G, pc, kl);
      auto cap = capacity_block(2, 3, 160, 128, bits, G, pc, kl, at::kCPU);
      for (size_t i = 0; i + 1 < cuts.size(); ++i)
        kk::pack_into(x.narrow(2, cuts[i], cuts[i + 1] - cuts[i]), cap, cuts[i]);
      const std::string what = "bits " + std::to_string(bits) + (pc ? " per-channel" : kl ? " key layout" : " values");
      expect_same_block(first_tokens(cap, T), whole, what);
      // a token range decodes as the whole block's rows
      auto all = kk::ref::dequantize(whole, at::kFloat);
      EXPECT_TRUE(at::equal(kk::dequantize(first_tokens(cap, T), at::kFloat, 5, 17), all.narrow(2, 5, 12))) << what;
    }
  auto cap = capacity_block(1, 1, 64, 128, 4, 32, true, true, at::kCPU);
  EXPECT_ANY_THROW(kk::pack_into(at::randn({1, 1, 4, 128}), cap, 3));  // per-channel groups start at 0, 32, ...
}

TEST(PackedKVRef, RoundTripErrorWithinHalfScale) {
  at::manual_seed(1);
  for (int bits : {2, 4, 8})
    for (bool pc : {false, true})
      for (int g : {32, 64, 128}) {
        auto x = at::randn({2, 3, 128, 128});
        auto b = kk::ref::quantize_pack(x, bits, g, pc, pc);
        auto y = kk::ref::dequantize(b, at::kFloat);
        // scale per element, broadcast back to [B, H, T, D]
        auto s = b.scale.to(at::kFloat);
        s = pc ? s.repeat_interleave(g, 2) : s.transpose(2, 3).repeat_interleave(std::min(g, 128), 3);
        auto excess = ((x - y).abs() - s / 2).max().item<float>();
        // fp16 storage of scale and min adds at most a few ulps of the group's range
        EXPECT_LT(excess, 2e-3 * x.abs().max().item<float>()) << bits << " " << pc << " " << g;
      }
}

// Independent attention: scalar loops in double over the dequantized cache [sink | body | tail],
// the last n tail tokens the queries' own (query i sees them up to its own).
TEST(PackedKVRef, AttentionMatchesNaiveLoops) {
  at::manual_seed(2);
  const int B = 2, Hkv = 2, rep = 3, D = 128, T = 64, S = 3, R = 7;
  for (int n : {1, 3}) {
    auto q = at::randn({B, Hkv * rep, n, D});
    auto k = kk::ref::quantize_pack(at::randn({B, Hkv, T, D}), 4, 32, true, true);
    auto v = kk::ref::quantize_pack(at::randn({B, Hkv, T, D}), 2, 32, false, false);
    const kk::FpSegment sink{at::randn({B, Hkv, S, D}), at::randn({B, Hkv, S, D})};
    const kk::FpSegment tail{at::randn({B, Hkv, R, D}), at::randn({B, Hkv, R, D})};
    auto out = kk::ref::packed_attention(q, &k, &v, sink, tail, 1.0 / std::sqrt(double(D)));
    ASSERT_EQ(out.sizes(), at::IntArrayRef({B, Hkv * rep, n, D}));
    auto K = at::cat({sink.k, kk::ref::dequantize(k, at::kFloat), tail.k}, 2);
    auto V = at::cat({sink.v, kk::ref::dequantize(v, at::kFloat), tail.v}, 2);
    const int N = S + T + R;
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < Hkv * rep; ++h)
        for (int i = 0; i < n; ++i) {
          const int visible = N - n + i + 1;
          std::vector<double> s(static_cast<size_t>(visible));
          double mx = -1e300, sum = 0;
          for (int t = 0; t < visible; ++t) {
            double acc = 0;
            for (int d = 0; d < D; ++d) acc += double(q[b][h][i][d].item<float>()) * K[b][h / rep][t][d].item<float>();
            s[t] = acc / std::sqrt(double(D));
            mx = std::max(mx, s[t]);
          }
          for (auto& x : s) sum += (x = std::exp(x - mx));
          for (int d = 0; d < D; d += 17) {
            double o = 0;
            for (int t = 0; t < visible; ++t) o += s[t] / sum * V[b][h / rep][t][d].item<float>();
            EXPECT_NEAR(out[b][h][i][d].item<float>(), o, 1e-4) << "n " << n << " query " << i;
          }
        }
  }
}

#ifdef KVX_WITH_CUDA
TEST(PackedKVCuda, QuantizeMatchesReferenceExactly) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(3);
  for (int bits : {2, 4, 8})
    for (auto [pc, kl] : std::vector<std::pair<bool, bool>>{{false, false}, {false, true}, {true, true}})
      for (int g : {32, 64, 128}) {
        auto x = at::randn({2, 4, 256, 128}).to(at::kBFloat16).to(at::kFloat);
        auto c = kk::quantize_pack(x.cuda(), bits, g, pc, kl);
        auto r = kk::ref::quantize_pack(x, bits, g, pc, kl);
        const std::string what = std::to_string(bits) + (pc ? " pc " : kl ? " kl " : " v ") + std::to_string(g);
        expect_same_block(c, r, what);
        EXPECT_TRUE(at::allclose(kk::dequantize(c, at::kFloat).cpu(), kk::ref::dequantize(r, at::kFloat))) << what;
        // appends at odd and group offsets into capacity buffers on the device
        auto cap = capacity_block(2, 4, 320, 128, bits, g, pc, kl, at::kCUDA);
        const int64_t cut = pc ? g : 37;
        kk::pack_into(x.narrow(2, 0, cut).cuda(), cap, 0);
        kk::pack_into(x.narrow(2, cut, 256 - cut).cuda(), cap, cut);
        expect_same_block(first_tokens(cap, 256), r, what + " appended");
        EXPECT_TRUE(at::allclose(kk::dequantize(first_tokens(cap, 256), at::kFloat, 33, 201).cpu(),
                                 kk::ref::dequantize(r, at::kFloat, 33, 201)))
            << what;
      }
}

namespace {

// Max |fused - reference| for one cache: T packed tokens (keys per-channel or per-token in groups of
// gk, values per-token in groups of gv; read from capacity buffers as token ranges), S sink and R
// tail tokens of which the last n are the n queries' own. Keys get per-channel magnitudes `kmag`
// (outlier channels as in real models) and the query a factor `qmag`. *bf16_err: what bf16 attention
// over the same dequantized cache (bf16 query, keys, values; fp32 math) is off from the reference by.
float fused_vs_ref(int B, int Hkv, int rep, int n, int T, int S, int R, int bk, int bv, int gk, bool key_pc, int gv,
                   float kmag_max = 1.f, float qmag = 1.f, float* bf16_err = nullptr) {
  const int D = 128;
  auto chan = at::ones({D});
  if (kmag_max > 1.f) chan = at::linspace(1.f, kmag_max, D).index_select(0, at::randperm(D));
  auto q = (at::randn({B, Hkv * rep, n, D}) * qmag).cuda();
  kk::PackedBlock k, v;
  if (T > 0) {
    auto kc = capacity_block(B, Hkv, T + 64, D, bk, gk, key_pc, true, at::kCUDA);
    auto vc = capacity_block(B, Hkv, T + 64, D, bv, gv, false, false, at::kCUDA);
    kk::pack_into((at::randn({B, Hkv, T, D}) * chan).cuda(), kc, 0);
    kk::pack_into(at::randn({B, Hkv, T, D}).cuda(), vc, 0);
    k = first_tokens(kc, T);
    v = first_tokens(vc, T);
  }
  auto seg = [&](int len) {
    auto buf = (at::randn({B, Hkv, len + 9, D}) * chan).to(at::kBFloat16).cuda();  // a token range of a buffer
    return buf.narrow(2, 4, len);
  };
  kk::FpSegment sink, tail{seg(R), seg(R)};
  if (S > 0) sink = {seg(S), seg(S)};
  const double sc = 1.0 / std::sqrt(double(D));
  auto fused = kk::packed_attention(q, T > 0 ? &k : nullptr, T > 0 ? &v : nullptr, sink, tail, sc).cpu();
  const kk::PackedBlock ck = cpu(k), cv = cpu(v);
  const kk::FpSegment csink{S > 0 ? sink.k.cpu() : at::Tensor(), S > 0 ? sink.v.cpu() : at::Tensor()};
  const kk::FpSegment ctail{tail.k.cpu(), tail.v.cpu()};
  auto ref = kk::ref::packed_attention(q.cpu(), T > 0 ? &ck : nullptr, T > 0 ? &cv : nullptr, csink, ctail, sc);
  if (bf16_err) {
    auto bf = [](const at::Tensor& x) { return x.to(at::kBFloat16).to(at::kFloat); };
    std::vector<at::Tensor> ks{csink.k, T > 0 ? bf(kk::ref::dequantize(ck, at::kFloat)) : at::Tensor(), ctail.k};
    std::vector<at::Tensor> vs{csink.v, T > 0 ? bf(kk::ref::dequantize(cv, at::kFloat)) : at::Tensor(), ctail.v};
    *bf16_err = (kk::ref::attend_parts(bf(q.cpu()), ks, vs, sc, "bf16") - ref).abs().max().item<float>();
  }
  return (fused - ref).abs().max().item<float>();
}

}  // namespace

// Every kernel instantiation family: bit widths, per-channel and per-token keys, folded and
// dequantized values, GQA ratios up to 16, decode steps and chunks, with and without sinks.
TEST(PackedKVCuda, FusedAttentionMatchesReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(4);
  int cases = 0;
  for (auto [bk, bv] : std::vector<std::pair<int, int>>{{2, 2}, {4, 4}, {8, 8}, {4, 2}, {2, 8}})
    for (auto [gk, key_pc, gv] : std::vector<std::tuple<int, bool, int>>{
             {32, true, 32}, {64, true, 64}, {128, true, 128}, {64, true, 16}, {32, false, 32}, {64, false, 64}, {128, false, 128}})
      // (GQA ratio, chunk, packed tokens, sinks, tail): decode steps and chunks, no body to a long one
      for (auto [rep, n, T, S, R] : std::vector<std::tuple<int, int, int, int, int>>{
               {1, 1, 128, 0, 1}, {4, 1, 384, 4, 33}, {8, 1, 128 * 19, 0, 77}, {4, 5, 0, 0, 40}, {4, 32, 128 * 19, 0, 77},
               {16, 32, 384, 4, 33}, {3, 17, 128, 2, 17}}) {
        const float err = fused_vs_ref(2, 2, rep, n, T, S, R, bk, bv, gk, key_pc, gv);
        EXPECT_LT(err, 2e-3) << "bits " << bk << "/" << bv << " key groups " << gk << (key_pc ? " per channel" : " per token")
                             << " value groups " << gv << " rep " << rep << " n " << n << " T " << T << " S " << S << " R " << R;
        ++cases;
      }
  std::printf("fused attention cases checked: %d\n", cases);
}

// The kernel copies packed tensors in 16-byte chunks as they lie: a layout with strided rows is
// refused (it would otherwise need a copy on every call), naming what is wrong.
TEST(PackedKVCuda, FusedAttentionRefusesStridedPacking) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  auto k = kk::quantize_pack(at::randn({2, 2, 64, 128}).cuda(), 2, 32, true, true);
  auto v = kk::quantize_pack(at::randn({2, 2, 64, 128}).cuda(), 2, 32, false, false);
  k.codes = k.codes.transpose(0, 1).contiguous().transpose(0, 1);  // same values, (b, h) planes strided
  const kk::FpSegment tail{at::randn({2, 2, 1, 128}).to(at::kBFloat16).cuda(), at::randn({2, 2, 1, 128}).to(at::kBFloat16).cuda()};
  try {
    kk::packed_attention(at::randn({2, 8, 1, 128}).cuda(), &k, &v, {}, tail, 0.1);
    ADD_FAILURE() << "a strided packed tensor was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("packed key codes must have contiguous"), std::string::npos) << e.what();
  }
}

// Long contexts: many splits, many tiles per warp, value groups != key groups.
TEST(PackedKVCuda, FusedAttentionLongContext) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(5);
  for (auto [bk, bv] : std::vector<std::pair<int, int>>{{4, 4}, {2, 2}, {8, 4}})
    for (auto [gk, key_pc, gv] : std::vector<std::tuple<int, bool, int>>{{64, true, 32}, {64, true, 16}, {64, false, 64}})
      for (int n : {1, 16}) {
        float err = fused_vs_ref(2, 2, 4, n, 64 * 150, 16, 13 + n, bk, bv, gk, key_pc, gv);
        std::printf("long context bits %d/%d key groups %d%s value groups %d n %d: max err %.2e\n", bk, bv, gk,
                    key_pc ? "c" : "t", gv, n, err);
        EXPECT_LT(err, 2e-3) << bk << "/" << bv << " gk " << gk << " gv " << gv << " n " << n;
      }
}

// Real-model-like magnitudes: outlier key channels (x20) and a larger query (sharp softmax, where
// score errors show): the fused kernel must stay within bf16 tolerance, i.e. about as far from the
// fp32 reference as bf16 attention over the same cache is.
TEST(PackedKVCuda, FusedAttentionOutlierChannels) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(6);
  for (auto [bk, bv] : std::vector<std::pair<int, int>>{{4, 4}, {2, 2}, {8, 8}})
    for (int rep : {1, 4})
      for (auto [gk, key_pc, gv] : std::vector<std::tuple<int, bool, int>>{{128, true, 128}, {128, true, 64}, {128, false, 128}, {64, false, 64}}) {
        float bf16 = 0.f;
        float err = fused_vs_ref(2, 2, rep, 1, 128 * 9, 0, 40, bk, bv, gk, key_pc, gv, 20.f, 3.f, &bf16);
        std::printf("outliers bits %d/%d rep %d key groups %d%s value groups %d: max err %.2e (bf16 attention: %.2e)\n", bk,
                    bv, rep, gk, key_pc ? "c" : "t", gv, err, bf16);
        EXPECT_LT(err, std::max(2e-3f, 2.f * bf16)) << bk << "/" << bv << " rep " << rep << " gk " << gk << " gv " << gv;
      }
}
#endif
