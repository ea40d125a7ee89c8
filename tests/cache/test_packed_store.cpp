// The cache's growing stores (core/cache/packed_store.h) against plain tensors: FpRows through
// random appends, front and middle erases and front replacements (its rows move lazily, so the
// indices are what is tested), then on rows that require grad (kept out of place); PackedStore appends and truncation against one quantize_pack of the
// same tokens; Int8Store against int8_quantize.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <random>

#include "core/cache/int8_absmax.h"
#include "core/cache/packed_store.h"

namespace {

at::Tensor cat2(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined() || a.size(2) == 0) return b;
  if (!b.defined() || b.size(2) == 0) return a;
  return at::cat({a, b}, 2);
}

}  // namespace

TEST(FpRows, RandomEditsMatchPlainTensors) {
  at::manual_seed(1);
  std::mt19937 rng(2);
  kvx::FpRows rows;
  at::Tensor want = at::zeros({2, 3, 0, 8});
  for (int step = 0; step < 400; ++step) {
    const int op = int(rng() % 4), n = int(want.size(2));
    if (op <= 1 || n == 0) {  // append; from step 250 on rows that require grad (kept out of place)
      auto x = at::randn({2, 3, int64_t(1 + rng() % 9), 8});
      if (step >= 250) x.requires_grad_(true);
      rows.append(x);
      want = cat2(want, x);
    } else if (op == 2) {  // erase [t0, t0 + k)
      const int t0 = int(rng() % n), k = int(rng() % (n - t0 + 1));
      rows.erase(t0, k);
      want = cat2(want.narrow(2, 0, t0), want.narrow(2, t0 + k, n - t0 - k));
    } else {  // replace the first `old` tokens by m new ones
      const int old = int(rng() % (n + 1)), m = int(rng() % 6);
      auto x = m > 0 ? at::randn({2, 3, m, 8}) : at::Tensor();
      rows.replace_front(old, x);
      want = cat2(x, want.narrow(2, old, n - old));
    }
    ASSERT_EQ(rows.tokens(), want.size(2)) << "step " << step;
    if (rows.tokens() > 0) ASSERT_TRUE(at::equal(rows.view().detach(), want.detach())) << "step " << step;
    ASSERT_EQ(rows.elements(), want.numel());
  }
}

TEST(PackedStore, AppendsAndTruncationEqualOneBlock) {
  at::manual_seed(3);
  for (auto [pc, kl] : std::vector<std::pair<bool, bool>>{{false, false}, {false, true}, {true, true}}) {
    const int G = pc ? 32 : 64;
    auto x = at::randn({1, 2, 300, 128});
    kvx::PackedStore s(4, G, pc, kl);
    const std::vector<int64_t> cuts = pc ? std::vector<int64_t>{0, 96, 160, 300} : std::vector<int64_t>{0, 1, 6, 77, 300};
    for (size_t i = 0; i + 1 < cuts.size(); ++i) s.append(x.narrow(2, cuts[i], cuts[i + 1] - cuts[i]));
    auto whole = kvx::kernels::ref::quantize_pack(x, 4, G, pc, kl);
    auto v = s.view();
    EXPECT_TRUE(at::equal(v.codes.contiguous(), whole.codes)) << pc << kl;
    EXPECT_TRUE(at::equal(v.scale.contiguous(), whole.scale)) << pc << kl;
    // keep a prefix and append the rest again: the same block
    const int64_t keep = pc ? 128 : 101;
    s.truncate(keep);
    s.append(x.narrow(2, keep, 300 - keep));
    EXPECT_TRUE(at::equal(s.view().codes.contiguous(), whole.codes)) << pc << kl << " after truncate";
    EXPECT_TRUE(at::equal(s.decode(at::kFloat, 0, 300), kvx::kernels::ref::dequantize(whole, at::kFloat))) << pc << kl;
    kvx::SegmentTally t;
    s.account("k", t);
    EXPECT_EQ(t.segments()[0].bits, 2 * 300 * 128 * 4) << "codes";
  }
  kvx::PackedStore s(4, 32, true, true);
  s.append(at::randn({1, 1, 40, 128}));
  EXPECT_ANY_THROW(s.append(at::randn({1, 1, 8, 128})));  // per-channel groups start at multiples of 32
}

TEST(Int8Store, AppendsEqualOneQuantization) {
  at::manual_seed(4);
  auto x = at::randn({2, 2, 70, 128});
  kvx::Int8Store s;
  s.append(x.narrow(2, 0, 3));
  s.append(x.narrow(2, 3, 67));
  auto q = kvx::int8_quantize(x);
  EXPECT_TRUE(at::equal(s.view().codes, q.codes));
  EXPECT_TRUE(at::equal(s.view().scale, q.scale));
  EXPECT_TRUE(at::equal(s.decode(at::kFloat, 5, 9), kvx::int8_dequantize(q, at::kFloat).narrow(2, 5, 4)));
}
