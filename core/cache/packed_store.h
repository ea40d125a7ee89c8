// Storage that grows in place, for the policies whose attention reads it with the fused kernels
// (core/kernels): capacity doubles as tokens arrive (amortized O(1) appends) and the kernels read
// a token range of the buffers as it lies.
//   FpRows       full-precision rows [B, H, T, D] in the compute dtype (sinks, residuals, windows;
//                kept out of place while they require grad)
//   PackedStore  a kernels::PackedBlock (kvq's affine groups in the kernels' layout)
//   Int8Store    int8 absmax rows with fp32 scales (selective_int8, core/cache/int8_absmax.h)
// Buffers live on the device of the first appended tensor.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

#include "core/cache/int8_absmax.h"
#include "core/cache/token_codec.h"
#include "core/kernels/int8_kv.h"
#include "core/kernels/packed_kv.h"

namespace kvx {

class FpRows {
 public:
  int64_t tokens() const { return n_; }
  void append(const at::Tensor& x);  // [B, H, n, D]
  // Removes tokens [t0, t0 + n); later tokens move down.
  void erase(int64_t t0, int64_t n);
  // Replaces the first `old` tokens by x ([B, H, m, D], m may differ); later tokens move.
  void replace_front(int64_t old, const at::Tensor& x);
  void clear() {
    n_ = start_ = 0;
    autograd_ = false;
  }
  at::Tensor view() const { return view(0, n_); }
  // tokens [t0, t1), a view of the buffer (t1 may reach into the room reserve_more() made)
  at::Tensor view(int64_t t0, int64_t t1) const;
  // Graph-replayed runs (KVCachePolicy::plain_steps): room for `more` tokens after the rows, made now
  // (the rows may move) so that writing them moves nothing; false when the rows cannot take writes
  // in place (none yet, or kept out of place for training).
  bool reserve_more(int64_t more);
  // Counts n tokens that plain steps wrote after the rows (into the reserved room).
  void grow(int64_t n);
  int64_t elements() const { return buf_.defined() ? n_ * buf_.size(0) * buf_.size(1) * buf_.size(3) : 0; }

 private:
  void reserve(int64_t tokens, const at::Tensor& like);
  at::Tensor buf_;  // [B, H, capacity, D]: the rows are tokens [start_, start_ + n_)
  int64_t start_ = 0, n_ = 0;
  // Rows that require grad (training) are kept out of place, exactly n_ tokens: writing into a
  // buffer would modify tensors saved for backward.
  bool autograd_ = false;
};

class PackedStore {
 public:
  PackedStore(int bits, int group, bool per_channel, bool key_layout)
      : bits_(bits), group_(group), per_channel_(per_channel), key_layout_(key_layout) {}
  int64_t tokens() const { return n_; }
  int group() const { return group_; }
  bool per_channel() const { return per_channel_; }
  // Quantizes x ([B, H, n, D]) after the tokens held; per-channel groups start there, so tokens()
  // must be a multiple of the group (else kvx::Error).
  void append(const at::Tensor& x);
  // Keeps the first n tokens (per-channel: a multiple of the group).
  void truncate(int64_t n);
  void clear() { n_ = 0; }
  kernels::PackedBlock view() const { return view(n_); }
  kernels::PackedBlock view(int64_t n) const;  // the first n tokens, views of the buffers
  at::Tensor decode(at::ScalarType dtype, int64_t t0, int64_t t1) const;
  // codes / scales / shifts of the tokens held, as the affine codec counts them
  void account(const std::string& prefix, SegmentTally& t) const;

 private:
  void reserve(int64_t tokens, const at::Tensor& like);
  int bits_, group_;
  bool per_channel_, key_layout_;
  kernels::PackedBlock buf_;  // capacity buffers
  int64_t n_ = 0;
};

class Int8Store {
 public:
  int64_t tokens() const { return n_; }
  void append(const at::Tensor& x);  // int8 absmax per (b, h, token) row
  void clear() { n_ = 0; }
  kernels::Int8Rows view() const;
  // Graph-replayed runs (as FpRows): room for `more` rows (false before the first); rows
  // [tokens(), tokens() + n) as views, where plain steps quantize into; grow() counts the rows they
  // wrote.
  bool reserve_more(int64_t more);
  Int8Block room(int64_t n) const;
  void grow(int64_t n);
  at::Tensor decode(at::ScalarType dtype, int64_t t0, int64_t t1) const;  // code·scale in fp32, cast
  void account(const std::string& prefix, SegmentTally& t) const;

 private:
  void reserve(int64_t tokens, const at::Tensor& like);
  at::Tensor codes_, scale_;  // [B, H, capacity, D] int8, [B, H, capacity] fp32
  int64_t n_ = 0;
};

}  // namespace kvx
