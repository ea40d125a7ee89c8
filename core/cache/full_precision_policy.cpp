#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <torch/version.h>

#include <algorithm>

#include "core/cache/dense_attention.h"
#include "core/cache/kv_cache_policy.h"
#include "core/cache/packed_store.h"
#include "core/common/error.h"
#include "core/kernels/packed_kv.h"
#include "core/kernels/step_rows.h"

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
    std::string why = fused_run_unsupported(m);
    if (why.empty() && m.head_dim != 128) why = fmt::format("head_dim {} (the fused kernels take 128)", m.head_dim);
    if (kernel_ == KernelRequest::Fused && !why.empty())
      throw error("full precision: kernel: fused was requested, but it cannot run fused here: {}", why);
    fused_decode_ = why.empty() && kernel_ != KernelRequest::DequantThenAttend;
    // plain steps: the fused tiles on CUDA, their reference on the CPU (graph emulation, tests)
    plain_ok_ = fused_decode_ || (m.device.is_cpu() && kernel_ == KernelRequest::Auto);
  }

  int64_t plain_steps(int64_t pos, int64_t want) override {
    if (!plain_ok_ || layers_.empty()) return 0;
    const int64_t held = layers_.front().k.tokens();
    if (pos != held) throw error("full precision: a run of decode steps from position {}, but the cache holds {} tokens", pos, held);
    if (model_window_ > 0) want = std::min(want, model_window_ - held);  // every step attends to all
    if (want <= 0) return 0;
    for (Layer& L : layers_)
      if (!L.k.reserve_more(want) || !L.v.reserve_more(want)) return 0;
    for (Layer& L : layers_) {  // where step 0 stores and reads (plain_attend)
      const int64_t N = L.k.tokens();
      L.plain = {L.k.view(N, N + 1), L.v.view(N, N + 1), L.k.view(0, N + 1), L.v.view(0, N + 1)};
    }
    run_ = want;
    return want;
  }

  void advance(int64_t steps) override {
    for (Layer& L : layers_) {
      L.k.grow(steps);
      L.v.grow(steps);
    }
    seen_ = layers_.front().k.tokens();
    count_plain_paths(steps);
  }

  at::Tensor attend(int layer, const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s,
                    const AttentionOptions& opt) override {
    const int64_t n = k_new.size(2);
    Layer& L = layers_.at(size_t(layer));
    model_window_ = opt.model_window;
    if (s.step.defined()) return plain_attend(layer, L, q, k_new, v_new, s, opt);
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
    // the plain run's step 0 (plain_steps): the rows its token goes to, and the rows it reads; the
    // run's step d stores d rows further and reads d rows more (whatever advance() did meanwhile)
    struct {
      at::Tensor put_k, put_v, k, v;
    } plain;
  };

  // A plain step (plain_steps): the token goes to row N + d, the tiles read N + d + 1 rows (N the
  // rows held when the run began).
  at::Tensor plain_attend(int layer, Layer& L, const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new,
                          const StepInfo& s, const AttentionOptions& opt) {
    const int64_t* d = s.step.data_ptr<int64_t>();
    kernels::put_rows(L.plain.put_k, L.plain.put_v, k_new, v_new, {d, 1, 0, run_});
    const kernels::FpSegment all{L.plain.k, L.plain.v, {d, 0, 1, run_}};
    const at::Tensor o = kernels::dense_attention(q, {}, all, opt.scale);  // [B, Hq, 1, D]
    note_plain_path(layer, kernels::attention_path(q), q.is_cuda() ? "kvx_dense" : "reference");
    const int64_t B = q.size(0), Hq = q.size(1), D = q.size(3);
    return o.view({B, 1, Hq * D}).to(q.scalar_type());
  }
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
  bool fused_decode_ = false, plain_ok_ = false;
  int64_t model_window_ = -1;  // the model's, as attend() last saw it
  int64_t run_ = 1;            // the steps of the plain run plain_steps() readied
};

}  // namespace

std::unique_ptr<KVCachePolicy> make_full_precision_policy(KernelRequest kernel) {
  return std::make_unique<FullPrecisionPolicy>(kernel);
}

}  // namespace kvx
