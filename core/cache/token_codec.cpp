#include "core/cache/token_codec.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "core/cache/int8_absmax.h"

namespace kvx {

void SegmentTally::add(const std::string& name, int64_t elements, int64_t bits) {
  for (auto& s : segs_)
    if (s.name == name) {
      s.elements += elements;
      s.bits += bits;
      return;
    }
  segs_.push_back({name, elements, bits, MemorySegment::kDevice});
}

void SegmentTally::to_report(MemoryReport& r) const {
  r.segments.insert(r.segments.end(), segs_.begin(), segs_.end());
}

namespace {

class FpBlock final : public CodedBlock {
 public:
  explicit FpBlock(at::Tensor x) : x_(std::move(x)) {}
  int64_t tokens() const override { return x_.size(2); }
  at::Tensor decode(at::ScalarType dtype) const override { return x_.to(dtype); }
  void account(const std::string& prefix, SegmentTally& t) const override {
    t.add(prefix + ".body_fp", x_.numel(), fp_bits(x_));
  }

 private:
  at::Tensor x_;
};

class FpCodec final : public TokenCodec {
 public:
  std::unique_ptr<CodedBlock> encode(const at::Tensor& x) const override {
    return std::make_unique<FpBlock>(x.contiguous().clone());
  }
  std::string name() const override { return "fp"; }
};

class AffineCodedBlock final : public CodedBlock {
 public:
  explicit AffineCodedBlock(AffineBlock b) : b_(std::move(b)) {}
  int64_t tokens() const override { return b_.N; }
  at::Tensor decode(at::ScalarType dtype) const override { return affine_dequantize(b_, dtype); }
  void account(const std::string& prefix, SegmentTally& t) const override {
    t.add(prefix + ".codes", b_.values(), b_.code_bits());
    t.add(prefix + ".scales", b_.groups(), b_.scale_bits());
    t.add(prefix + ".shifts", b_.groups(), b_.shift_bits());
  }

 private:
  AffineBlock b_;
};

class AffineCodec final : public TokenCodec {
 public:
  AffineCodec(int bits, int64_t group, GroupAxis axis, at::ScalarType meta)
      : bits_(bits), group_(group), axis_(axis), meta_(meta) {}
  std::unique_ptr<CodedBlock> encode(const at::Tensor& x) const override {
    return std::make_unique<AffineCodedBlock>(affine_quantize(x, bits_, group_, axis_, meta_));
  }
  std::string name() const override {
    return fmt::format("affine b{} g{} {}", bits_, group_, axis_ == GroupAxis::Token ? "token" : "channel");
  }
  CodecFormat format() const override { return {CodecFormat::Affine, bits_, group_, axis_, meta_}; }

 private:
  int bits_;
  int64_t group_;
  GroupAxis axis_;
  at::ScalarType meta_;
};

class Int8CodedBlock final : public CodedBlock {
 public:
  explicit Int8CodedBlock(Int8Block b) : b_(std::move(b)) {}
  int64_t tokens() const override { return b_.tokens(); }
  at::Tensor decode(at::ScalarType dtype) const override { return int8_dequantize(b_, dtype); }
  void account(const std::string& prefix, SegmentTally& t) const override {
    t.add(prefix + ".codes", b_.codes.numel(), b_.code_bits());
    t.add(prefix + ".scales", b_.scale.numel(), b_.scale_bits());
  }

 private:
  Int8Block b_;
};

class Int8Codec final : public TokenCodec {
 public:
  std::unique_ptr<CodedBlock> encode(const at::Tensor& x) const override {
    return std::make_unique<Int8CodedBlock>(int8_quantize(x));
  }
  std::string name() const override { return "int8"; }
  CodecFormat format() const override { return {CodecFormat::Int8, 8, 0, GroupAxis::Token, at::kFloat}; }
};

}  // namespace

std::shared_ptr<const TokenCodec> make_fp_codec() { return std::make_shared<FpCodec>(); }
std::shared_ptr<const TokenCodec> make_affine_codec(int bits, int64_t group, GroupAxis axis,
                                                    at::ScalarType meta_dtype) {
  return std::make_shared<AffineCodec>(bits, group, axis, meta_dtype);
}
std::shared_ptr<const TokenCodec> make_int8_codec() { return std::make_shared<Int8Codec>(); }

}  // namespace kvx
