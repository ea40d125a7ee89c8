// Token codecs: how one of K or V is stored in the compressed body of a segment store.
// A codec encodes a run of tokens [B, H, n, D] into a CodedBlock that holds the real storage
// (packed codes + metadata) and decodes it on demand. The policy pairs a key codec with a
// value codec (docs/methods/README.md: a policy owns a key codec and a value codec).
//
// Accounting: every block reports the bits it actually holds: packed code bytes·8 and the
// metadata tensors at their element size. Full-precision storage counts 16 bits per element
// (logical fp16/bf16 storage) even when CPU compute keeps it in fp32.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "core/cache/affine_quantizer.h"
#include "core/cache/kv_cache_policy.h"

namespace kvx {

// Sums element counts and bits per segment name, in first-seen order.
class SegmentTally {
 public:
  void add(const std::string& name, int64_t elements, int64_t bits);
  void to_report(MemoryReport& r) const;  // appends kDevice segments
  const std::vector<MemorySegment>& segments() const { return segs_; }

 private:
  std::vector<MemorySegment> segs_;
};

// Logical full-precision storage: 16 bits per element.
inline int64_t fp_bits(const at::Tensor& t) { return t.defined() ? t.numel() * 16 : 0; }

class CodedBlock {
 public:
  virtual ~CodedBlock() = default;
  virtual int64_t tokens() const = 0;
  virtual at::Tensor decode(at::ScalarType dtype) const = 0;  // [B, H, n, D]
  // Adds this block's storage under prefix + ".codes" / ".scales" / ".shifts" / ".body_fp".
  virtual void account(const std::string& prefix, SegmentTally& tally) const = 0;
};

// What a codec stores, for policies that keep it in the fused kernels' layout (packed_store.h):
// affine groups (PackedStore) or int8 absmax rows (Int8Store); Other: only as CodedBlocks.
struct CodecFormat {
  enum Kind { Other, Affine, Int8 } kind = Other;
  int bits = 0;
  int64_t group = 0;
  GroupAxis axis = GroupAxis::Token;
  at::ScalarType meta = at::kHalf;  // affine statistics' dtype
};

class TokenCodec {
 public:
  virtual ~TokenCodec() = default;
  virtual std::unique_ptr<CodedBlock> encode(const at::Tensor& x) const = 0;  // [B, H, n, D]
  virtual std::string name() const = 0;
  virtual CodecFormat format() const { return {}; }
};

// Keeps the tokens as they are (the `none` codec inside a compressed layout).
std::shared_ptr<const TokenCodec> make_fp_codec();
// Affine min-max groups (docs/methods/kvq.md). meta_dtype kHalf or kBFloat16 (the statistics'
// storage; kHalf is what the fused kernels read).
std::shared_ptr<const TokenCodec> make_affine_codec(int bits, int64_t group, GroupAxis axis,
                                                    at::ScalarType meta_dtype);
// Symmetric absmax int8 per (token, head) with fp32 scales (docs/methods/selective_int8.md).
std::shared_ptr<const TokenCodec> make_int8_codec();

}  // namespace kvx
