#include "core/higgs/higgs_quantizer.h"

#include <ATen/ATen.h>
#include <c10/util/StringUtil.h>

#include <vector>

#include "core/common/error.h"
#include "core/higgs/hadamard.h"
#include "core/higgs/index_packing.h"

namespace kvx::higgs {

int64_t g_eff(int64_t g, int64_t C) {
  if (!is_pow2(g)) throw error("hadamard_groupsize must be a power of two, got {}", g);
  return std::min(g, next_pow2(std::max<int64_t>(C, 1)));
}

namespace {
// [rows, C] -> [rows, m, g] fp32 zero-padded.
at::Tensor to_groups(const at::Tensor& x, int64_t g) {
  const int64_t rows = x.size(0), C = x.size(1), m = (C + g - 1) / g;
  auto xf = x.to(at::kFloat);
  if (m * g != C) xf = at::constant_pad_nd(xf, {0, m * g - C}, 0);
  return xf.reshape({rows, m, g}).contiguous();
}
}  // namespace

HiggsCodes higgs_quantize(const at::Tensor& x, const Grid& grid, int64_t g_cfg) {
  if (x.dim() != 2) throw error("HIGGS quantize expects [rows, C], got {}", c10::str(x.sizes()));
  HiggsCodes c;
  c.rows = x.size(0);
  c.C = x.size(1);
  c.g = g_eff(g_cfg, c.C);
  c.d = grid.d;
  c.n = grid.n;
  c.bits = grid.bits();
  const int64_t m = c.groups(), v = c.vectors_per_group(), gp = v * c.d;
  auto xg = to_groups(x, c.g);                       // [rows, m, g]
  auto s = xg.norm(2, {2}, /*keepdim=*/true);        // fp32 [rows, m, 1]
  auto u = fwht(xg) / at::where(s > 0, s, at::ones_like(s));  // s = 0 -> x = 0 -> u = 0
  if (gp != c.g) u = at::constant_pad_nd(u, {0, gp - c.g}, 0);
  u = u.reshape({-1, c.d}).cpu().contiguous();        // [rows·m·v, d]
  const int64_t count = u.size(0);
  std::vector<int32_t> idx(static_cast<size_t>(count));
  const float* pts = grid.points.data_ptr<float>();
  std::vector<float> hn(static_cast<size_t>(grid.n));
  for (int i = 0; i < grid.n; ++i) {
    float q = 0;
    for (int k = 0; k < grid.d; ++k) q += pts[i * grid.d + k] * pts[i * grid.d + k];
    hn[size_t(i)] = 0.5f * q;
  }
  const float* up = u.data_ptr<float>();
#pragma omp parallel for if (count > 4096)
  for (int64_t i = 0; i < count; ++i) idx[size_t(i)] = nearest_point(up + i * c.d, pts, hn.data(), grid.n, grid.d);
  c.packed = at::empty({index_packed_bytes(count, c.bits)}, at::kByte);
  pack_indices(idx.data(), count, c.bits, c.packed.data_ptr<uint8_t>());
  c.scales = s.reshape({c.rows, m}).to(at::kHalf);
  (void)v;
  return c;
}

at::Tensor higgs_indices(const HiggsCodes& c) {
  auto idx = at::empty({c.rows, c.groups() * c.vectors_per_group()}, at::kInt);
  unpack_indices(c.packed.data_ptr<uint8_t>(), c.codes(), c.bits, idx.data_ptr<int32_t>());
  return idx;
}

at::Tensor higgs_dequantize(const HiggsCodes& c, const Grid& grid, at::ScalarType dtype, at::Device device) {
  if (grid.d != c.d || grid.n != c.n) throw error("HIGGS codes were made with grid ({},{}), given ({},{})", c.d, c.n, grid.d, grid.n);
  const int64_t m = c.groups(), v = c.vectors_per_group();
  if (c.rows == 0) return at::empty({0, c.C}, at::TensorOptions().dtype(dtype).device(device));
  auto idx = higgs_indices(c).to(at::kLong).to(device);                       // [rows, m·v]
  auto pts = grid.points.to(device);
  auto u = pts.index_select(0, idx.reshape({-1})).reshape({c.rows, m, v * c.d});
  if (v * c.d != c.g) u = u.narrow(2, 0, c.g);
  auto s = c.scales.to(device).to(at::kFloat).reshape({c.rows, m, 1});
  auto x = fwht(u * s, /*inverse=*/true).reshape({c.rows, m * c.g});
  if (m * c.g != c.C) x = x.narrow(1, 0, c.C);
  return x.to(dtype).contiguous();
}

}  // namespace kvx::higgs
