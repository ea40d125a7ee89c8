#include "core/cache/packed_store.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "core/cache/int8_absmax.h"
#include "core/common/error.h"

namespace kvx {
namespace {

// Capacity for `need` tokens: grown geometrically, whole multiples of `unit` (16-byte rows of statistics,
// whole per-channel groups).
int64_t capacity_for(int64_t need, int64_t have, int64_t unit) {
  // geometric growth keeps appends amortized O(1); by 1/8 rather than doubling, so a long cache
  // (a 32K-token full-precision cache is most of a GPU) never needs twice its size to grow
  int64_t cap = std::max<int64_t>({64, have + std::max<int64_t>(have / 8, 256), need});
  return (cap + unit - 1) / unit * unit;
}

}  // namespace

// ---------------------------------------------------------------- FpRows
// The rows are buf_ tokens [start_, start_ + n_): dropping tokens at the front (a sliding window,
// the residual's flush) moves start_ instead of the rows; the rows move down only when the buffer's
// end is reached.
void FpRows::reserve(int64_t tokens, const at::Tensor& like) {
  const int64_t cap = buf_.defined() ? buf_.size(2) : 0;
  if (start_ + tokens <= cap) return;
  if (tokens <= cap && 2 * tokens <= cap) {  // room enough once the rows move to the front
    if (n_ > 0) buf_.narrow(2, 0, n_).copy_(buf_.narrow(2, start_, n_).clone());
    start_ = 0;
    return;
  }
  auto grown = at::empty({like.size(0), like.size(1), capacity_for(tokens, cap, 64), like.size(3)}, like.options());
  if (n_ > 0) grown.narrow(2, 0, n_).copy_(buf_.narrow(2, start_, n_));
  buf_ = grown;
  start_ = 0;
}

void FpRows::append(const at::Tensor& x) {
  if (!x.defined() || x.size(2) == 0) return;
  const int64_t n = x.size(2);
  if (at::GradMode::is_enabled() && x.requires_grad()) autograd_ = true;
  if (autograd_) {  // out of place: the rows stay in the graph of the chunks they came from
    buf_ = n_ > 0 ? at::cat({view(), x}, 2) : x;
    start_ = 0;
    n_ += n;
    return;
  }
  reserve(n_ + n, x);
  buf_.narrow(2, start_ + n_, n).copy_(x);
  n_ += n;
}

void FpRows::erase(int64_t t0, int64_t n) {
  if (t0 < 0 || n < 0 || t0 + n > n_) throw error("FpRows::erase: [{}, {}) outside {} tokens", t0, t0 + n, n_);
  const int64_t after = n_ - t0 - n;
  if (autograd_) {
    buf_ = n_ - n > 0 ? at::cat({view(0, t0), view(t0 + n, n_)}, 2) : at::Tensor();
    start_ = 0;
  } else if (n > 0 && t0 <= after) {  // the rows before the gap move up (overlapping: through a copy)
    if (t0 > 0) buf_.narrow(2, start_ + n, t0).copy_(buf_.narrow(2, start_, t0).clone());
    start_ += n;
  } else if (n > 0) {  // the rows after it move down
    buf_.narrow(2, start_ + t0, after).copy_(buf_.narrow(2, start_ + t0 + n, after).clone());
  }
  n_ -= n;
}

void FpRows::replace_front(int64_t old, const at::Tensor& x) {
  const int64_t m = x.defined() ? x.size(2) : 0, after = n_ - old;
  if (old < 0 || after < 0) throw error("FpRows::replace_front: {} of {} tokens", old, n_);
  if (autograd_) {
    buf_ = m == 0 ? (after > 0 ? view(old, n_) : at::Tensor()) : after > 0 ? at::cat({x, view(old, n_)}, 2) : x;
    start_ = 0;
    n_ = m + after;
    return;
  }
  if (m == 0 && old == 0) return;
  if (m <= old + start_) {  // the new front fits before the kept rows: nothing else moves
    start_ += old - m;
  } else {
    reserve(m + after, x);
    buf_.narrow(2, m, after).copy_(buf_.narrow(2, start_ + old, after).clone());
    start_ = 0;
  }
  if (m > 0) buf_.narrow(2, start_, m).copy_(x);
  n_ = m + after;
}

bool FpRows::reserve_more(int64_t more) {
  if (!buf_.defined() || autograd_) return false;
  reserve(n_ + more, buf_);
  return true;
}

void FpRows::grow(int64_t n) {
  if (!buf_.defined() || n < 0 || start_ + n_ + n > buf_.size(2))
    throw error("FpRows::grow: {} more tokens do not fit the room of {} after {} rows", n, buf_.defined() ? buf_.size(2) : 0,
                start_ + n_);
  n_ += n;
}

at::Tensor FpRows::view(int64_t t0, int64_t t1) const {
  if (!buf_.defined()) return at::Tensor();
  return buf_.narrow(2, start_ + t0, t1 - t0);
}

// ---------------------------------------------------------------- PackedStore
void PackedStore::reserve(int64_t tokens, const at::Tensor& like) {
  if (buf_.codes.defined() && buf_.codes.size(2) >= tokens) return;
  const int64_t B = like.size(0), H = like.size(1), D = like.size(3);
  const int64_t G = per_channel_ ? group_ : std::min<int64_t>(group_, D);
  const int64_t cap = capacity_for(tokens, buf_.codes.defined() ? buf_.codes.size(2) : 0, std::max<int64_t>(64, G));
  kernels::PackedBlock b = kernels::empty_block(B, H, cap, D, bits_, group_, per_channel_, key_layout_, like.device());
  if (n_ > 0) {
    const kernels::PackedBlock old = view();
    b.codes.narrow(2, 0, n_).copy_(old.codes);
    const int stat_dim = per_channel_ ? 2 : 3;
    b.scale.narrow(stat_dim, 0, old.scale.size(stat_dim)).copy_(old.scale);
    b.minv.narrow(stat_dim, 0, old.minv.size(stat_dim)).copy_(old.minv);
  }
  buf_ = b;
}

void PackedStore::append(const at::Tensor& x) {
  const int64_t n = x.size(2);
  if (n == 0) return;
  if (per_channel_ && n_ % group_ != 0)
    throw error("packed store: per-channel groups of {} cannot start at token {}", group_, n_);
  reserve(n_ + n, x);
  kernels::pack_into(x, buf_, n_);
  n_ += n;
}

void PackedStore::truncate(int64_t n) {
  if (n < 0 || n > n_ || (per_channel_ && n % group_ != 0 && n != n_))
    throw error("packed store: cannot keep {} of {} tokens (groups of {})", n, n_, group_);
  if (!key_layout_ && n % 2 == 1 && n < n_) {
    // the new last token leaves its pair: its high half-words return from the next row (the
    // reverse of pack_into's pairing move)
    auto c16 = buf_.codes.view(at::kShort);
    const int64_t w2 = c16.size(3);
    c16.select(2, n - 1).slice(2, 1, w2, 2).copy_(c16.select(2, n).slice(2, 0, w2, 2));
  }
  n_ = n;
}

kernels::PackedBlock PackedStore::view(int64_t n) const {
  kernels::PackedBlock b = buf_;
  if (!buf_.codes.defined()) return b;
  b.codes = buf_.codes.narrow(2, 0, n);
  if (per_channel_) {
    b.scale = buf_.scale.narrow(2, 0, (n + group_ - 1) / group_);
    b.minv = buf_.minv.narrow(2, 0, (n + group_ - 1) / group_);
  } else {
    b.scale = buf_.scale.narrow(3, 0, n);
    b.minv = buf_.minv.narrow(3, 0, n);
  }
  return b;
}

at::Tensor PackedStore::decode(at::ScalarType dtype, int64_t t0, int64_t t1) const {
  if (t1 <= t0) return at::Tensor();
  return kernels::dequantize(view(), dtype, t0, t1);
}

void PackedStore::account(const std::string& prefix, SegmentTally& t) const {
  const kernels::PackedBlock b = view();
  if (!b.codes.defined() || n_ == 0) return;
  const int64_t values = b.codes.size(0) * b.codes.size(1) * n_ * b.codes.size(3) * (32 / bits_);
  t.add(prefix + ".codes", values, values * bits_);
  t.add(prefix + ".scales", b.scale.numel(), b.scale.numel() * 16);
  t.add(prefix + ".shifts", b.minv.numel(), b.minv.numel() * 16);
}

// ---------------------------------------------------------------- Int8Store
void Int8Store::reserve(int64_t tokens, const at::Tensor& like) {
  if (codes_.defined() && codes_.size(2) >= tokens) return;
  const int64_t cap = capacity_for(tokens, codes_.defined() ? codes_.size(2) : 0, 64);
  const auto opt = at::TensorOptions().device(like.device());
  auto c = at::empty({like.size(0), like.size(1), cap, like.size(3)}, opt.dtype(at::kChar));
  auto s = at::empty({like.size(0), like.size(1), cap}, opt.dtype(at::kFloat));
  if (n_ > 0) {
    c.narrow(2, 0, n_).copy_(codes_.narrow(2, 0, n_));
    s.narrow(2, 0, n_).copy_(scale_.narrow(2, 0, n_));
  }
  codes_ = c;
  scale_ = s;
}

void Int8Store::append(const at::Tensor& x) {
  const int64_t n = x.size(2);
  if (n == 0) return;
  reserve(n_ + n, x);
  Int8Block into = room(n);
  int8_quantize_into(x, into);  // in place: no copy of the new rows
  n_ += n;
}

bool Int8Store::reserve_more(int64_t more) {
  if (!codes_.defined()) return false;
  reserve(n_ + more, codes_);
  return true;
}

Int8Block Int8Store::room(int64_t n) const { return {codes_.narrow(2, n_, n), scale_.narrow(2, n_, n)}; }

void Int8Store::grow(int64_t n) {
  if (!codes_.defined() || n < 0 || n_ + n > codes_.size(2))
    throw error("Int8Store::grow: {} more rows do not fit the room of {} after {}", n, codes_.defined() ? codes_.size(2) : 0, n_);
  n_ += n;
}

kernels::Int8Rows Int8Store::view() const {
  if (!codes_.defined()) return {};
  return {codes_.narrow(2, 0, n_), scale_.narrow(2, 0, n_)};
}

at::Tensor Int8Store::decode(at::ScalarType dtype, int64_t t0, int64_t t1) const {
  if (t1 <= t0) return at::Tensor();
  return int8_dequantize(Int8Block{codes_.narrow(2, t0, t1 - t0), scale_.narrow(2, t0, t1 - t0)}, dtype);
}

void Int8Store::account(const std::string& prefix, SegmentTally& t) const {
  if (n_ == 0) return;
  const int64_t rows = codes_.size(0) * codes_.size(1) * n_;
  t.add(prefix + ".codes", rows * codes_.size(3), rows * codes_.size(3) * 8);
  t.add(prefix + ".scales", rows, rows * 32);
}

}  // namespace kvx
