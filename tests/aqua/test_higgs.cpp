// HIGGS core: Hadamard transform, index packing, the quantizer against the worked example of
// docs/methods/aqua_kv.md and an independent slow implementation, and grid generation.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <vector>

#include "core/common/error.h"
#include "core/higgs/grid.h"
#include "core/higgs/hadamard.h"
#include "core/higgs/higgs_quantizer.h"
#include "core/higgs/index_packing.h"

using namespace kvx::higgs;

namespace {
int popcount(int64_t x) { return __builtin_popcountll(uint64_t(x)); }
}  // namespace

TEST(Hadamard, MatchesSylvesterDefinition) {
  const int64_t g = 16;
  auto x = at::randn({3, g}, at::kFloat);
  auto y = fwht(x);
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t i = 0; i < g; ++i) {
      double s = 0;
      for (int64_t j = 0; j < g; ++j) s += (popcount(i & j) % 2 ? -1.0 : 1.0) * x[r][j].item<float>();
      EXPECT_NEAR(y[r][i].item<float>(), s, 1e-4);
    }
}

TEST(Hadamard, WorkedExampleAndRoundTrip) {
  auto x = at::tensor({1.0f, 2.0f, -1.0f, 0.5f});
  auto y = fwht(x);
  const float want[4] = {2.5f, -2.5f, 3.5f, 0.5f};
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(y[i].item<float>(), want[i]);
  auto big = at::randn({5, 1024}, at::kFloat);
  auto back = fwht(fwht(big), /*inverse=*/true);
  EXPECT_LT((back - big).abs().max().item<float>(), 1e-4);
  EXPECT_THROW(fwht(at::zeros({3, 12})), kvx::Error);
}

TEST(IndexPacking, RoundTripAndLayoutForEveryWidth) {
  for (int bits : {2, 4, 6, 8, 12, 16}) {
    const int64_t n = 37;
    std::vector<int32_t> codes(n), back(n);
    for (int64_t i = 0; i < n; ++i) codes[i] = int32_t((i * 2654435761u) % (1u << bits));
    std::vector<uint8_t> packed(index_packed_bytes(n, bits));
    pack_indices(codes.data(), n, bits, packed.data());
    EXPECT_EQ(int64_t(packed.size()), (n * bits + 7) / 8);
    // Independent reading of the layout: code i is stream bits [i·b, i·b + b), LSB first.
    for (int64_t i = 0; i < n; ++i) {
      int32_t v = 0;
      for (int k = 0; k < bits; ++k) {
        const int64_t bit = i * bits + k;
        v |= ((packed[bit / 8] >> (bit % 8)) & 1) << k;
      }
      ASSERT_EQ(v, codes[i]) << "bits " << bits << " code " << i;
    }
    unpack_indices(packed.data(), n, bits, back.data());
    EXPECT_EQ(back, codes) << bits;
  }
}

TEST(Higgs, WorkedExample_2_12) {
  const Grid grid = upstream_grid_2_16();
  auto x = at::tensor({1.0f, 2.0f, -1.0f, 0.5f}).reshape({1, 4});
  auto c = higgs_quantize(x, grid, 4);
  EXPECT_EQ(c.g, 4);
  EXPECT_EQ(c.bits, 4);
  auto idx = higgs_indices(c);
  EXPECT_EQ(idx[0][0].item<int>(), 14);
  EXPECT_EQ(idx[0][1].item<int>(), 7);
  EXPECT_FLOAT_EQ(c.scales[0][0].item<float>(), 2.5f);
  auto xh = higgs_dequantize(c, grid, at::kFloat);
  const double want[4] = {1.322602, 2.786627, -1.048147, 0.507550};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(xh[0][i].item<float>(), want[i], 2e-6);
  const double rel = (xh - x).pow(2).sum().item<double>() / x.pow(2).sum().item<double>();
  EXPECT_NEAR(rel, 0.11604, 5e-5);
  // Storage: 2 indices × 4 bits = 1 byte; one fp16 scale.
  EXPECT_EQ(c.code_bits(), 8);
  EXPECT_EQ(c.scale_bits(), 16);
}

TEST(Higgs, GroupEffective) {
  EXPECT_EQ(g_eff(1024, 128), 128);   // small-code-llama: C = 1·128
  EXPECT_EQ(g_eff(1024, 1024), 1024);
  EXPECT_EQ(g_eff(1024, 3072), 1024);
  EXPECT_EQ(g_eff(1024, 96), 128);    // padded coordinates remain and are counted
  EXPECT_EQ(g_eff(64, 200), 64);
  EXPECT_THROW(g_eff(100, 128), kvx::Error);
}

// Slow reference: explicit loops, explicit Sylvester matrix, squared-distance argmin.
static std::vector<float> slow_higgs(const std::vector<float>& x, const Grid& grid, int64_t g,
                                     std::vector<int>& idx_out) {
  const int64_t C = int64_t(x.size());
  const int64_t m = (C + g - 1) / g, d = grid.d;
  const float* P = grid.points.data_ptr<float>();
  std::vector<float> out(size_t(m * g), 0.f);
  for (int64_t j = 0; j < m; ++j) {
    std::vector<double> xj(size_t(g), 0.0);
    for (int64_t i = 0; i < g; ++i) xj[i] = j * g + i < C ? x[size_t(j * g + i)] : 0.0;
    double s = 0;
    for (double v : xj) s += v * v;
    s = std::sqrt(float(s));
    std::vector<double> u(size_t((g + d - 1) / d * d), 0.0);
    for (int64_t i = 0; i < g; ++i) {
      double acc = 0;
      for (int64_t k = 0; k < g; ++k) acc += (popcount(i & k) % 2 ? -1.0 : 1.0) * xj[k];
      u[i] = s > 0 ? acc / s : 0.0;
    }
    std::vector<double> q(u.size());
    for (size_t a = 0; a < u.size(); a += d) {
      int best = 0;
      double bd = 1e300;
      for (int p = 0; p < grid.n; ++p) {
        double dist = 0;
        for (int k = 0; k < d; ++k) dist += (u[a + k] - P[p * d + k]) * (u[a + k] - P[p * d + k]);
        if (dist < bd - 1e-9) bd = dist, best = p;
      }
      idx_out.push_back(best);
      for (int k = 0; k < d; ++k) q[a + k] = P[best * d + k];
    }
    const double sh = double(at::Half(float(s)));
    for (int64_t i = 0; i < g; ++i) {
      double acc = 0;
      for (int64_t k = 0; k < g; ++k) acc += (popcount(i & k) % 2 ? -1.0 : 1.0) * q[k] * sh;
      out[size_t(j * g + i)] = float(acc / g);
    }
  }
  out.resize(size_t(C));
  return out;
}

TEST(Higgs, MatchesSlowReferenceWithPadding) {
  const Grid grid = upstream_grid_2_16();
  at::manual_seed(3);
  const int64_t rows = 4, C = 200, g = 64;  // 4 groups, the last one padded (200 = 3·64 + 8)
  auto x = at::randn({rows, C}, at::kFloat);
  x[2].zero_();                              // s = 0 row
  auto c = higgs_quantize(x, grid, g);
  auto xh = higgs_dequantize(c, grid, at::kFloat);
  auto idx = higgs_indices(c);
  int mismatched = 0;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> xr(x[r].data_ptr<float>(), x[r].data_ptr<float>() + C);
    std::vector<int> ref_idx;
    auto ref = slow_higgs(xr, grid, g, ref_idx);
    for (size_t i = 0; i < ref_idx.size(); ++i) mismatched += idx[r][int64_t(i)].item<int>() != ref_idx[i];
    for (int64_t i = 0; i < C; ++i) EXPECT_NEAR(xh[r][i].item<float>(), ref[size_t(i)], 2e-4);
  }
  EXPECT_EQ(mismatched, 0);
  EXPECT_EQ(xh[2].abs().max().item<float>(), 0.f);
  EXPECT_EQ(c.codes(), rows * 4 * 32);
  EXPECT_EQ(c.code_bits(), rows * 4 * 32 * 4);
}

TEST(Higgs, SixBitGridRoundTrip) {
  // n = 64 -> 6-bit indices, packed by the local packer.
  at::manual_seed(1);
  auto pts = at::randn({64, 2}, at::kFloat);
  const Grid grid = make_grid(2, 64, pts);
  auto x = at::randn({3, 128}, at::kFloat);
  auto c = higgs_quantize(x, grid, 1024);
  EXPECT_EQ(c.bits, 6);
  EXPECT_EQ(c.g, 128);
  EXPECT_EQ(c.code_bits(), (3 * 64 * 6 + 7) / 8 * 8);
  auto idx = higgs_indices(c);
  EXPECT_LT(idx.max().item<int>(), 64);
  auto xh = higgs_dequantize(c, grid, at::kFloat);
  EXPECT_EQ(xh.sizes(), x.sizes());
}

TEST(Grid, GeneratedMatchesUpstreamMse) {
  const Grid up = upstream_grid_2_16();
  // Reduced run (2^18 samples × 100 steps instead of 10^7 × 600) that still converges.
  const Grid gen = generate_grid(2, 16, 1 << 18, 100, 0);
  const double mse_up = grid_mse(up, 1 << 20, 12345), mse_gen = grid_mse(gen, 1 << 20, 12345);
  std::printf("grid (2,16) MSE per coordinate: upstream %.6f, generated %.6f (ratio %.4f)\n", mse_up,
              mse_gen, mse_gen / mse_up);
  EXPECT_LT(std::abs(mse_gen / mse_up - 1.0), 0.02);
  // Deterministic: the same settings give the same bytes.
  EXPECT_EQ(generate_grid(2, 16, 1 << 12, 5, 7).hash(), generate_grid(2, 16, 1 << 12, 5, 7).hash());
}

TEST(Grid, FileRoundTripAndErrors) {
  const std::string dir = ::testing::TempDir() + "/kvx_grid_test" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const Grid up = upstream_grid_2_16();
  const std::string f = grid_file(dir, 2, 16);
  write_grid_file(f, up);
  EXPECT_EQ(read_grid_file(f, 2, 16).hash(), up.hash());
  EXPECT_THROW(read_grid_file(f, 2, 64), kvx::Error);
  EXPECT_EQ(grid_for(2, 16, dir).hash(), up.hash());  // cache file is used as is
}
