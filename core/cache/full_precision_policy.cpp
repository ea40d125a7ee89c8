#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "core/cache/kv_cache_policy.h"

namespace kvx {

namespace {
int64_t bits_of_kind(const std::vector<MemorySegment>& segs, MemorySegment::Kind kind) {
  int64_t b = 0;
  for (const auto& s : segs) b += s.kind == kind ? s.bits : 0;
  return b;
}
}  // namespace

int64_t MemoryReport::device_bits() const { return bits_of_kind(segments, MemorySegment::kDevice); }
int64_t MemoryReport::offload_bits() const { return bits_of_kind(segments, MemorySegment::kOffload); }
int64_t MemoryReport::side_bits() const { return bits_of_kind(segments, MemorySegment::kSide); }

double MemoryReport::bpv(const ModelInfo& m, int64_t batch) const {
  double denom = 2.0 * m.n_layers * batch * m.n_kv_heads * m.head_dim * double(tokens_seen);
  return denom > 0 ? double(device_bits()) / denom : 0.0;
}

namespace {

// Keys and values stay in the compute dtype; growth is amortized by doubling capacity so
// token-by-token decoding does not copy the whole history every step.
class FullPrecisionPolicy final : public KVCachePolicy {
 public:
  void reset(const ModelInfo& m, int64_t batch) override {
    info_ = m;
    batch_ = batch;
    layers_.assign(m.n_layers, Layer{});
    seen_ = 0;
  }

  AttnInputs update(int layer, const at::Tensor& k_new, const at::Tensor& v_new,
                    const StepInfo& s) override {
    Layer& L = layers_.at(layer);
    const int64_t n = k_new.size(2);
    if (at::GradMode::is_enabled() && (k_new.requires_grad() || v_new.requires_grad())) {
      // Training (kvx train): writing into the preallocated buffer in place would modify tensors
      // an earlier chunk's attention saved for backward, so append out of place.
      L.k = L.len > 0 ? at::cat({L.k.narrow(2, 0, L.len), k_new}, 2) : k_new;
      L.v = L.len > 0 ? at::cat({L.v.narrow(2, 0, L.len), v_new}, 2) : v_new;
    } else {
      if (!L.k.defined() || L.len + n > L.k.size(2)) {
        int64_t cap = std::max<int64_t>(64, 2 * (L.len + n));
        auto grow = [&](const at::Tensor& old, const at::Tensor& like) {
          auto t = at::empty({like.size(0), like.size(1), cap, like.size(3)}, like.options());
          if (L.len > 0) t.narrow(2, 0, L.len).copy_(old.narrow(2, 0, L.len));
          return t;
        };
        L.k = grow(L.k, k_new);
        L.v = grow(L.v, v_new);
      }
      L.k.narrow(2, L.len, n).copy_(k_new);
      L.v.narrow(2, L.len, n).copy_(v_new);
    }
    L.len += n;
    AttnInputs out;
    out.k = L.k.narrow(2, 0, L.len);
    out.v = L.v.narrow(2, 0, L.len);
    out.key_pos = at::arange(s.pos0 + n - L.len, s.pos0 + n, at::TensorOptions().dtype(at::kLong).device(k_new.device()));
    out.n_cached = L.len - n;
    if (layer == info_.n_layers - 1) seen_ = L.len;
    return out;
  }

  MemoryReport memory() const override {
    MemoryReport r;
    int64_t elems = 0;
    for (const auto& L : layers_) elems += 2 * batch_ * info_.n_kv_heads * info_.head_dim * L.len;
    r.segments.push_back({"kv.fp", elems, elems * 16, MemorySegment::kDevice});
    r.tokens_seen = seen_;
    r.tokens_kept = seen_;
    return r;
  }

  std::string name() const override { return "none"; }

 private:
  struct Layer {
    at::Tensor k, v;
    int64_t len = 0;
  };
  ModelInfo info_;
  int64_t batch_ = 1;
  std::vector<Layer> layers_;
  int64_t seen_ = 0;
};

}  // namespace

std::unique_ptr<KVCachePolicy> make_full_precision_policy() {
  return std::make_unique<FullPrecisionPolicy>();
}

}  // namespace kvx
