// QAQ group quantization and bit-width rules against the worked examples of docs/methods/qaq.md
// (numbers typed from the page, not produced by this code).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/cache/bit_packing.h"
#include "quantizers/qaq_math.h"

using namespace kvx::qaq;

namespace {
const std::vector<float> kX = {0.2f, -0.1f, 0.4f, 3.0f, 0.0f, -0.3f, 0.1f, -2.5f};

std::vector<float> roundtrip(const std::vector<float>& x, int bits, const GroupOptions& o,
                             std::vector<uint8_t>* codes_out = nullptr) {
  GroupStats st = group_stats(x.data(), int64_t(x.size()), o);
  const float s = group_scale(st, bits, o);
  std::vector<uint8_t> codes;
  quantize_group(x.data(), int64_t(x.size()), st, bits, st.center, s, o, codes);
  std::vector<float> ov;
  for (int32_t i : st.outliers) ov.push_back(x[i]);
  std::vector<float> y(x.size());
  dequantize_group(codes.data(), st, bits, st.center, s, ov.data(), int64_t(x.size()), o, y.data());
  if (codes_out) *codes_out = codes;
  return y;
}

void expect_near_all(const std::vector<float>& got, const std::vector<float>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "index " << i;
}
}  // namespace

TEST(QaqMath, OutliersOfWorkedExample) {
  GroupOptions o;
  o.outliers_ratio = 0.25;
  GroupStats st = group_stats(kX.data(), 8, o);
  EXPECT_EQ(st.outliers, (std::vector<int32_t>{3, 7}));
  EXPECT_EQ(st.inliers, 6);
  EXPECT_NEAR(st.center, 0.05, 1e-7);
  EXPECT_NEAR(st.range, 0.7, 1e-7);
  EXPECT_NEAR(group_scale(st, 2, o), 0.175, 1e-7);
}

TEST(QaqMath, OutliersOfM128MarkMinAndMax) {
  // docs/methods/qaq.md, "Groups and outliers": M = 128, r = 0.01 marks exactly the minimum and
  // the maximum.
  std::vector<float> x(128);
  for (int i = 0; i < 128; ++i) x[i] = float((i * 37) % 128) - 60.f;
  GroupOptions o;
  o.outliers_ratio = 0.01;
  GroupStats st = group_stats(x.data(), 128, o);
  ASSERT_EQ(st.outliers.size(), 2u);
  EXPECT_EQ(x[st.outliers[0]] + x[st.outliers[1]], -60.f + 67.f);
}

TEST(QaqMath, Uniform2BitCodeVariant) {
  GroupOptions o;
  o.outliers_ratio = 0.25;
  std::vector<uint8_t> codes;
  auto y = roundtrip(kX, 2, o, &codes);
  // signed codes 1, -1, 1, 0, -2, 0 stored with offset 2^(b-1) = 2
  EXPECT_EQ(codes, (std::vector<uint8_t>{3, 1, 3, 2, 0, 2}));
  expect_near_all(y, {0.225f, -0.125f, 0.225f, 3.0f, 0.05f, -0.3f, 0.05f, -2.5f}, 1e-6);
}

TEST(QaqMath, ZeroBitsAsTheReferenceCodeOrTheMean) {
  // the worked example's inliers: mu = 0.05, R = 0.7. At 0 bits the reference code's clamp to
  // [-1/2, 1/2 - 1] leaves q = -1/2 with s = R: every inlier becomes 0.05 - 0.35 = -0.30;
  // zero_bits: mean gives 0.05.
  GroupOptions o;
  o.outliers_ratio = 0.25;
  std::vector<uint8_t> codes;
  expect_near_all(roundtrip(kX, 0, o, &codes), {-0.3f, -0.3f, -0.3f, 3.0f, -0.3f, -0.3f, -0.3f, -2.5f}, 1e-6);
  EXPECT_TRUE(codes.empty());  // nothing stored per inlier
  o.zero_bits_mean = true;
  expect_near_all(roundtrip(kX, 0, o), {0.05f, 0.05f, 0.05f, 3.0f, 0.05f, 0.05f, 0.05f, -2.5f}, 1e-6);
}

TEST(QaqMath, Uniform3BitCodeVariant) {
  GroupOptions o;
  o.outliers_ratio = 0.25;
  std::vector<uint8_t> codes;
  auto y = roundtrip(kX, 3, o, &codes);
  EXPECT_EQ(codes, (std::vector<uint8_t>{6, 2, 7, 3, 0, 5}));  // 2, -2, 3, -1, -4, 1 (+4)
  expect_near_all(y, {0.225f, -0.125f, 0.3125f, 3.0f, -0.0375f, -0.3f, 0.1375f, -2.5f}, 1e-6);
}

TEST(QaqMath, Uniform2BitPaperMidrange) {
  GroupOptions o;
  o.outliers_ratio = 0.25;
  o.center = Center::Midrange;
  std::vector<uint8_t> codes;
  auto y = roundtrip(kX, 2, o, &codes);
  EXPECT_EQ(codes, (std::vector<uint8_t>{2, 1, 3, 1, 0, 2}));
  expect_near_all(y, {0.1375f, -0.0375f, 0.3125f, 3.0f, -0.0375f, -0.2125f, 0.1375f, -2.5f}, 1e-6);
}

TEST(QaqMath, ConstantGroupGivesCentre) {
  std::vector<float> c(8, 1.5f);  // R = 0, s = 0: every width reconstructs the value itself
  expect_near_all(roundtrip(c, 3, GroupOptions{}), c, 0);
  expect_near_all(roundtrip(c, 0, GroupOptions{}), c, 0);
}

TEST(QaqMath, SymmetricUsesZeroCentre) {
  GroupOptions o;
  o.symmetric = true;
  std::vector<float> x = {0.5f, -1.0f, 0.25f, 0.9f};
  // R = 2, b = 2: s = 0.5, q = round(x/0.5) clamped to [-2, 1]
  auto y = roundtrip(x, 2, o);
  expect_near_all(y, {0.5f, -1.0f, 0.0f, 0.5f}, 1e-6);
}

TEST(QaqMath, NormalQuantileAndNormalMethod) {
  EXPECT_NEAR(normal_quantile(0.975), 1.959963984540054, 1e-9);
  EXPECT_NEAR(normal_quantile(0.25), -0.6744897501960817, 1e-9);
  EXPECT_NEAR(normal_quantile(0.001), -3.090232306167814, 1e-9);
  GroupOptions o;
  o.method = Method::Normal;
  std::vector<float> x = {-1.f, 0.f, 1.f};  // mean 0, unbiased std 1
  // b = 1: threshold Φ⁻¹(0.5) = 0; levels Φ⁻¹(0.25), Φ⁻¹(0.75) = ∓0.67449
  auto y = roundtrip(x, 1, o);
  expect_near_all(y, {-0.6744898f, -0.6744898f, 0.6744898f}, 1e-6);
}

TEST(QaqMath, BitWidthsCodeFormula) {
  const double e_v = value_tolerance(1000, 1.0, 0.9);
  EXPECT_NEAR(e_v, 0.121716, 1e-6);
  EXPECT_NEAR(bits_real(0.7, e_v, BitsFormula::Code), 1.9544, 1e-4);
  EXPECT_EQ(bits_for(0.7, e_v, BitsFormula::Code, 1, 4), 2);
  EXPECT_NEAR(bits_real(7.0, e_v, BitsFormula::Code), 4.8951, 1e-4);
  EXPECT_EQ(bits_for(7.0, e_v, BitsFormula::Code, 1, 4), 4);
  const double e_small = value_tolerance(1000, 1.0, 0.05);
  EXPECT_NEAR(e_small, 2.190890, 1e-6);
  EXPECT_NEAR(bits_real(0.7, e_small, BitsFormula::Code), 0.2138, 1e-4);
  EXPECT_EQ(bits_for(0.7, e_small, BitsFormula::Code, 1, 4), 1);
  const double e_k = key_tolerance(1000, 1.0, 300);
  EXPECT_NEAR(e_k, 0.743411, 1e-6);
  EXPECT_NEAR(bits_real(0.7, e_k, BitsFormula::Code), 0.5566, 1e-4);
  EXPECT_EQ(bits_for(0.7, e_k, BitsFormula::Code, 1, 4), 1);
  EXPECT_NEAR(bits_real(7.0, e_k, BitsFormula::Code), 2.5130, 1e-4);
  EXPECT_EQ(bits_for(7.0, e_k, BitsFormula::Code, 1, 4), 3);
}

TEST(QaqMath, BitWidthsPaperFormula) {
  const double e_v = value_tolerance(1000, 1.0, 0.9);
  EXPECT_NEAR(bits_real(0.7, e_v, BitsFormula::Paper), 2.524, 1e-3);
  EXPECT_EQ(bits_for(0.7, e_v, BitsFormula::Paper, 1, 4), 3);
  const double e_k = key_tolerance(1000, 1.0, 300);
  EXPECT_NEAR(bits_real(7.0, e_k, BitsFormula::Paper), 3.235, 1e-3);
  EXPECT_EQ(bits_for(7.0, e_k, BitsFormula::Paper, 1, 4), 4);
  EXPECT_EQ(bits_for(0.0, e_k, BitsFormula::Paper, 0, 4), 0);  // log2(0) = -inf -> min
  EXPECT_EQ(bits_for(0.0, e_k, BitsFormula::Code, 2, 4), 2);
}

TEST(QaqMath, AttentionFlooredAt1e12) {
  EXPECT_DOUBLE_EQ(value_tolerance(12, 1.0, 0.0), 1.0 / 1e-12);
}

TEST(QaqMath, PackAnyAgreesWithBitPackingAndRoundTripsOddWidths) {
  std::mt19937 rng(7);
  for (int bits = 1; bits <= 8; ++bits) {
    const int64_t n = 77;
    std::vector<uint8_t> codes(n), back(n);
    for (auto& c : codes) c = uint8_t(rng() & ((1u << bits) - 1));
    std::vector<uint8_t> packed;
    pack_any(codes.data(), n, bits, packed);
    ASSERT_EQ(int64_t(packed.size()), (n * bits + 7) / 8);
    if (kvx::packable_bits(bits)) {
      std::vector<uint8_t> ref(packed.size());
      kvx::pack_bits(codes.data(), n, bits, ref.data());
      EXPECT_EQ(packed, ref) << bits;
    } else {
      // LSB-first stream: bit j of code i is stream bit i*b + j (independent reading).
      for (int64_t i = 0; i < n; ++i)
        for (int j = 0; j < bits; ++j) {
          const int64_t sb = i * bits + j;
          ASSERT_EQ((packed[sb / 8] >> (sb % 8)) & 1, (codes[i] >> j) & 1);
        }
    }
    unpack_any(packed.data(), n, bits, back.data());
    EXPECT_EQ(back, codes) << bits;
  }
}
