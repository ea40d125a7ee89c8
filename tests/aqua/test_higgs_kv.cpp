// The HIGGS dequantization kernel against core/higgs's CPU dequantization (its reference), where a
// device exists (skipped otherwise): the same grid lookups and butterfly operations in the same
// order, so the numbers agree to fp32 rounding.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <tuple>
#include <vector>

#include "core/higgs/higgs_quantizer.h"
#include "core/higgs/higgs_kv.h"

namespace kk = kvx::kernels;
namespace kh = kvx::higgs;

namespace {

kk::HiggsView view_of(const kh::HiggsCodes& c, const kh::Grid& grid) {
  kk::HiggsView v;
  v.packed = c.packed;
  v.scales = c.scales;
  v.points = grid.points;
  v.rows = c.rows;
  v.C = c.C;
  v.g = c.g;
  v.d = c.d;
  v.bits = c.bits;
  return v;
}

// (d, n, configured g, C): bit widths 4, 6, 8, 12, vectors that do not divide g, C that is not a
// multiple of g.
const std::vector<std::tuple<int, int, int, int>> kCases = {
    {2, 16, 1024, 1024}, {2, 64, 128, 1000}, {2, 256, 64, 256}, {3, 64, 32, 200}, {4, 4096, 1024, 384}, {1, 16, 16, 77}};

kh::Grid random_grid(int d, int n) { return kh::make_grid(d, n, at::randn({n, d})); }

}  // namespace

TEST(HiggsKVCuda, MatchesCoreHiggsDequantize) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(22);
  for (auto [d, n, g, C] : kCases) {
    const auto grid = random_grid(d, n);
    auto x = at::randn({300, C});
    const auto codes = kh::higgs_quantize(x, grid, g);
    auto want = kh::higgs_dequantize(codes, grid, at::kFloat);
    auto v = view_of(codes, grid);
    v.scales = v.scales.cuda();
    auto got = kk::higgs_dequantize(v, at::kFloat);
    ASSERT_TRUE(got.is_cuda());
    EXPECT_TRUE(at::allclose(got.cpu(), want, 0, 1e-6)) << "d " << d << " n " << n << " g " << g << " C " << C
                                                      << " max diff " << (got.cpu() - want).abs().max().item<float>();
  }
}
