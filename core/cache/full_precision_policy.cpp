#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <torch/version.h>

#include "core/cache/dense_attention.h"
#include "core/cache/kv_cache_policy.h"
#include "core/cache/packed_store.h"
#include "core/common/error.h"
#include "core/kernels/packed_kv.h"

namespace kvx {

namespace {

// Keys and values stay in the compute dtype (FpRows: capacity doubles, so token-by-token decoding
// does not copy the history every step). Attention reads the rows in place: on CUDA SDPA (or, on a
// Torch without SDPA's GQA decode, the fused kernel's full-precision tiles for decode steps); on CPU
// the plain fp32 attention that is the kernels' reference.
class FullPrecisionPolicy final : public KVCachePolicy {
 public:
  explicit FullPrecisionPolicy(KernelRequest k) : kernel_(k) {}

  void reset(const ModelInfo& m, int64_t batch) override {
    info_ = m;
    batch_ = batch;
    layers_.assign(size_t(m.n_layers), Layer{});
    seen_ = 0;
    std::string why = !m.device.is_cuda() ? "the fused kernels run on CUDA (this run is on the CPU)"
                            : m.head_dim != 128 ? fmt::format("head_dim {} (the fused kernels take 128)", m.head_dim)
                            : m.dtype != at::kHalf && m.dtype != at::kBFloat16
                                ? fmt::format("the model computes in {} (the fused kernels take float16 or bfloat16)",
                                              c10::toString(m.dtype))
                                : "";
#ifndef KVX_WITH_CUDA
    if (why.empty()) why = "this kvx build has no CUDA kernels";
#endif
    if (kernel_ == KernelRequest::Fused && !why.empty())
      throw error("full precision: kernel: fused was requested, but it cannot run fused here: {}", why);
    fused_decode_ = why.empty() && kernel_ != KernelRequest::DequantThenAttend;
  }

  at::Tensor attend(int layer, const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s,
                    const AttentionOptions& opt) override {
    const int64_t n = k_new.size(2);
    Layer& L = layers_.at(size_t(layer));
    const bool grad = at::GradMode::is_enabled() && (k_new.requires_grad() || v_new.requires_grad());
    if (kvx_decode() && fused_decode_ && n == 1 && !grad && (opt.model_window <= 0 || L.k.tokens() < opt.model_window)) {
      store(layer, k_new, v_new);
      at::Tensor o = kernels::dense_attention(q, {}, {L.k.view(), L.v.view()}, opt.scale);  // [B, Hq, 1, D]
      note_path(L.k.tokens() > 1, "fused", "kvx_dense");
      const int64_t B = q.size(0), Hq = q.size(1), D = q.size(3);
      return o.view({B, 1, Hq * D}).to(q.scalar_type());
    }
    AttnInputs a = update(layer, k_new, v_new, s);
    std::string impl;
    at::Tensor out = dense_attention(q, a, layer, s, opt, this, impl);
    note_path(a.n_cached > 0, q.is_cuda() ? "fused" : "cpu_reference", impl);
    return out;
  }

  AttnInputs update(int layer, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s) override {
    store(layer, k_new, v_new);
    const Layer& L = layers_.at(size_t(layer));
    const int64_t n = k_new.size(2), len = L.k.tokens();
    AttnInputs out;
    out.k = L.k.view();
    out.v = L.v.view();
    out.key_pos = at::arange(s.pos0 + n - len, s.pos0 + n, at::TensorOptions().dtype(at::kLong).device(k_new.device()));
    out.n_cached = len - n;
    return out;
  }

  MemoryReport memory() const override {
    MemoryReport r;
    int64_t elems = 0;
    for (const auto& L : layers_) elems += L.k.elements() + L.v.elements();
    r.segments.push_back({"kv.fp", elems, elems * 16, MemorySegment::kDevice});
    r.tokens_seen = seen_;
    r.tokens_kept = seen_;
    return r;
  }

  std::string name() const override { return "none"; }

 private:
  struct Layer {
    FpRows k, v;
  };
  void store(int layer, const at::Tensor& k_new, const at::Tensor& v_new) {
    Layer& L = layers_.at(size_t(layer));
    L.k.append(k_new);
    L.v.append(v_new);
    if (layer == info_.n_layers - 1) seen_ = L.k.tokens();
  }

  // Decode steps run kvx's full-precision tiles where Torch's SDPA has no GQA decode without a mask
  // (before 2.5); with it, SDPA over the rows in place is as fast or faster (dense_attention).
  static constexpr bool kvx_decode() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
    return false;
#else
    return true;
#endif
  }

  ModelInfo info_;
  int64_t batch_ = 1;
  std::vector<Layer> layers_;
  int64_t seen_ = 0;
  KernelRequest kernel_;
  bool fused_decode_ = false;
};

}  // namespace

std::unique_ptr<KVCachePolicy> make_full_precision_policy(KernelRequest kernel) {
  return std::make_unique<FullPrecisionPolicy>(kernel);
}

}  // namespace kvx
