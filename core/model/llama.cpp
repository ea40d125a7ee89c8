// Llama-family forward (Llama, Mistral, Qwen2): RMSNorm, RoPE, GQA attention through the cache
// policy, SwiGLU MLP. q/k/v and gate/up projections are fused at load (one matmul each).
#include <c10/core/InferenceMode.h>

#include <limits>
#include <optional>

#include "core/common/error.h"
#include "core/model/model_impl.h"
#include "core/kernels/model_ops.h"
#include "core/model/rope.h"

namespace kvx::detail {
namespace {

class LlamaModel final : public CausalLM {
 public:
  LlamaModel(const ModelConfig& cfg, const std::string& dir, const WeightLoader& ck, at::ScalarType dt, at::Device dev,
             const LayerSplit& sp)
      : CausalLM(cfg, dir, dt, dev, sp) {
    const int64_t H = cfg.hidden_size, D = cfg.head_dim, Hq = cfg.n_heads, Hkv = cfg.n_kv_heads;
    const int64_t I = cfg.intermediate_size, V = cfg.vocab_size;
    at::Device cur = dev;  // a split puts each layer on its own device, the head on the last
    auto load = [&](const std::string& name, std::vector<int64_t> shape) { return ck(name, shape, dt, cur); };
    embed_ = load("model.embed_tokens.weight", {V, H});
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      cur = layer_device(l);
      Layer L;
      L.ln1 = load(p + "input_layernorm.weight", {H});
      L.ln2 = load(p + "post_attention_layernorm.weight", {H});
      L.wqkv = at::cat({load(p + "self_attn.q_proj.weight", {Hq * D, H}), load(p + "self_attn.k_proj.weight", {Hkv * D, H}),
                        load(p + "self_attn.v_proj.weight", {Hkv * D, H})}, 0);
      if (cfg.attention_bias)
        L.bqkv = at::cat({load(p + "self_attn.q_proj.bias", {Hq * D}), load(p + "self_attn.k_proj.bias", {Hkv * D}),
                          load(p + "self_attn.v_proj.bias", {Hkv * D})}, 0);
      L.wo = load(p + "self_attn.o_proj.weight", {H, Hq * D});
      if (cfg.o_bias) L.bo = load(p + "self_attn.o_proj.bias", {H});
      L.wgu = at::cat({load(p + "mlp.gate_proj.weight", {I, H}), load(p + "mlp.up_proj.weight", {I, H})}, 0);
      L.wd = load(p + "mlp.down_proj.weight", {H, I});
      if (cfg.mlp_bias) {
        L.bgu = at::cat({load(p + "mlp.gate_proj.bias", {I}), load(p + "mlp.up_proj.bias", {I})}, 0);
        L.bd = load(p + "mlp.down_proj.bias", {H});
      }
      layers_.push_back(std::move(L));
    }
    cur = head_device();
    norm_ = load("model.norm.weight", {H});
    // Tied checkpoints usually omit lm_head.weight; an untied one must have it.
    head_ = cfg.tie_word_embeddings ? embed_.to(cur) : load("lm_head.weight", {V, H});  // same device: no copy
    rope_ = std::make_unique<Rope>(D, cfg.rope, std::min<int64_t>(cfg.max_positions, 1 << 16), dev);
    if (split()) make_split_ropes(D, cfg.rope, std::min<int64_t>(cfg.max_positions, 1 << 16));
    opt_.scale = 1.0 / std::sqrt(double(D));
    opt_.model_window = cfg.sliding_window;
  }

  at::Tensor forward(const at::Tensor& ids, int64_t pos0, KVCachePolicy& cache) override {
    return run(ids, pos0, at::Tensor(), cache);
  }

  // Plain steps read their position from the counter: on CUDA in the fused RoPE (inside its table),
  // on the CPU on the host; on one device, and not while training.
  int64_t max_step_position() const override {
    if (split() || training_) return -1;
    if (device_.is_cpu()) return std::numeric_limits<int64_t>::max();
    return kernels::fused_model_ops(embed_) ? rope_->table_positions() : -1;
  }

  at::Tensor forward_step(const at::Tensor& ids, int64_t pos0, const at::Tensor& step, KVCachePolicy& cache) override {
    if (ids.dim() != 2 || ids.size(1) != 1) throw error("forward_step: ids must be [B, 1] (one token per sequence)");
    if (!step.defined() || step.numel() != 1 || step.scalar_type() != at::kLong || step.device() != device_)
      throw error("forward_step: the step counter must be one int64 on {}", device_.str());
    return run(ids, pos0, step, cache);
  }

 private:
  at::Tensor run(const at::Tensor& ids_in, int64_t pos0, const at::Tensor& counter, KVCachePolicy& cache) {
    std::optional<c10::InferenceMode> guard;  // training: autograd as the caller's grad mode says
    if (!training_) guard.emplace();
    if (pos0 < 0) throw error("forward: pos0 must be >= 0, got {}", pos0);
    at::Tensor ids = check_ids(ids_in, cfg_.vocab_size, device_);
    const int64_t B = ids.size(0), T = ids.size(1);
    const int64_t D = cfg_.head_dim, Hq = cfg_.n_heads, Hkv = cfg_.n_kv_heads, I = cfg_.intermediate_size;
    StepInfo step;
    step.pos0 = pos0;
    step.n_new = T;
    step.rope = rope_.get();
    step.step = counter;
    at::Tensor x = at::embedding(embed_, ids);  // [B, T, H]
    for (int64_t l = 0; l < cfg_.n_layers; ++l) {
      const Layer& L = layers_[l];
      if (split()) {  // pipeline split: the hidden state follows the layers
        x = x.to(layer_device(l));
        step.rope = layer_rope(l);
      }
      at::Tensor qkv = batch_linear(rms_norm(x, L.ln1), L.wqkv, L.bqkv);
      at::Tensor q = qkv.narrow(-1, 0, Hq * D).view({B, T, Hq, D}).transpose(1, 2);
      at::Tensor k = qkv.narrow(-1, Hq * D, Hkv * D).view({B, T, Hkv, D}).transpose(1, 2);
      at::Tensor v = qkv.narrow(-1, (Hq + Hkv) * D, Hkv * D).view({B, T, Hkv, D}).transpose(1, 2).contiguous();
      q = rope(*step.rope, q, pos0, counter);
      k = rope(*step.rope, k, pos0, counter).contiguous();
      at::Tensor a = cache.attend(static_cast<int>(l), q, k, v, step, opt_);
      x = residual_linear(x, a, L.wo, L.bo);
      at::Tensor gu = batch_linear(rms_norm(x, L.ln2), L.wgu, L.bgu);
      x = residual_linear(x, silu_mul(gu, I), L.wd, L.bd);
    }
    cache.end_step(step);
    if (split()) x = x.to(head_device());
    return batch_linear(rms_norm(x, norm_), head_).to(at::kFloat);
  }


 public:
  void enable_training() override {
    if (training_) return;
    for (at::Tensor* w : weights()) *w = trainable_copy(*w);
    if (cfg_.tie_word_embeddings) head_ = embed_;
    training_ = true;
  }

  std::vector<at::Tensor> parameters() const override {
    std::vector<at::Tensor> out;
    for (at::Tensor* w : const_cast<LlamaModel*>(this)->weights())
      if (w->defined()) out.push_back(*w);
    return out;
  }

  std::vector<std::pair<std::string, at::Tensor>> hf_state_dict() const override {
    const int64_t D = cfg_.head_dim, Hq = cfg_.n_heads, Hkv = cfg_.n_kv_heads, I = cfg_.intermediate_size;
    std::vector<std::pair<std::string, at::Tensor>> out;
    auto put = [&](const std::string& name, const at::Tensor& t) { out.emplace_back(name, t.detach().contiguous()); };
    put("model.embed_tokens.weight", embed_);
    for (int64_t l = 0; l < cfg_.n_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const Layer& L = layers_[size_t(l)];
      put(p + "input_layernorm.weight", L.ln1);
      put(p + "post_attention_layernorm.weight", L.ln2);
      put(p + "self_attn.q_proj.weight", L.wqkv.narrow(0, 0, Hq * D));
      put(p + "self_attn.k_proj.weight", L.wqkv.narrow(0, Hq * D, Hkv * D));
      put(p + "self_attn.v_proj.weight", L.wqkv.narrow(0, (Hq + Hkv) * D, Hkv * D));
      if (L.bqkv.defined()) {
        put(p + "self_attn.q_proj.bias", L.bqkv.narrow(0, 0, Hq * D));
        put(p + "self_attn.k_proj.bias", L.bqkv.narrow(0, Hq * D, Hkv * D));
        put(p + "self_attn.v_proj.bias", L.bqkv.narrow(0, (Hq + Hkv) * D, Hkv * D));
      }
      put(p + "self_attn.o_proj.weight", L.wo);
      if (L.bo.defined()) put(p + "self_attn.o_proj.bias", L.bo);
      put(p + "mlp.gate_proj.weight", L.wgu.narrow(0, 0, I));
      put(p + "mlp.up_proj.weight", L.wgu.narrow(0, I, I));
      put(p + "mlp.down_proj.weight", L.wd);
      if (L.bgu.defined()) {
        put(p + "mlp.gate_proj.bias", L.bgu.narrow(0, 0, I));
        put(p + "mlp.up_proj.bias", L.bgu.narrow(0, I, I));
      }
      if (L.bd.defined()) put(p + "mlp.down_proj.bias", L.bd);
    }
    put("model.norm.weight", norm_);
    if (!cfg_.tie_word_embeddings) put("lm_head.weight", head_);
    return out;
  }

 private:
  // Every weight once (the tied head is not listed: it aliases embed_).
  std::vector<at::Tensor*> weights() {
    std::vector<at::Tensor*> w = {&embed_};
    for (Layer& L : layers_)
      for (at::Tensor* t : {&L.ln1, &L.ln2, &L.wqkv, &L.bqkv, &L.wo, &L.bo, &L.wgu, &L.bgu, &L.wd, &L.bd}) w.push_back(t);
    w.push_back(&norm_);
    if (!cfg_.tie_word_embeddings) w.push_back(&head_);
    return w;
  }

  // transformers' LlamaRMSNorm: normalize in fp32, cast back, then scale. The elementwise steps on
  // CUDA (inference) are fused kernels computing the same (core/kernels/model_ops.h): a decode step
  // is otherwise bound by its ~40 launches per layer.
  bool fused(const at::Tensor& x) const { return !training_ && kernels::fused_model_ops(x); }
  at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w) const {
#ifdef KVX_WITH_CUDA
    if (fused(x)) return kernels::cuda::rms_norm(x, w, cfg_.norm_eps);
#endif
    at::Tensor xf = x.to(at::kFloat);
    xf = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + cfg_.norm_eps);
    return w * xf.to(x.scalar_type());
  }
  // counter: a plain step's (forward_step), added to pos0 on the device (on the CPU read here).
  at::Tensor rope(const Rope& r, const at::Tensor& x, int64_t pos0, const at::Tensor& counter) const {
#ifdef KVX_WITH_CUDA
    if (fused(x) && counter.defined())
      return kernels::cuda::rope(x, r.cos_table(), r.sin_table(), pos0, counter.data_ptr<int64_t>());
    if (fused(x) && pos0 + x.size(2) <= r.table_positions()) return kernels::cuda::rope(x, r.cos_table(), r.sin_table(), pos0);
#endif
    if (counter.defined() && !counter.is_cpu()) throw error("rope: a step counter on {} without the fused kernels", counter.device().str());
    return r.apply_range(x, pos0 + (counter.defined() ? counter.item<int64_t>() : 0));
  }
  at::Tensor silu_mul(const at::Tensor& gu, int64_t I) const {
#ifdef KVX_WITH_CUDA
    if (fused(gu)) return kernels::cuda::silu_mul(gu);
#endif
    return at::silu(gu.narrow(-1, 0, I)) * gu.narrow(-1, I, I);
  }
  // x + a·Wᵀ (+ b). On CUDA one GEMM adds into x (one rounding of the sum, where the ATen pair
  // rounds the product first: within the compute dtype's tolerance).
  at::Tensor residual_linear(const at::Tensor& x, const at::Tensor& a, const at::Tensor& w, const at::Tensor& b) const {
    if (fused(x) && !b.defined()) {
      const int64_t H = x.size(-1);
      return at::addmm(x.reshape({-1, H}), a.reshape({-1, a.size(-1)}), w.t()).view(x.sizes());
    }
    return x + batch_linear(a, w, b);
  }

  struct Layer {
    at::Tensor ln1, ln2, wqkv, bqkv, wo, bo, wgu, bgu, wd, bd;
  };
  at::Tensor embed_, norm_, head_;
  std::vector<Layer> layers_;
  AttentionOptions opt_;
};

}  // namespace

std::shared_ptr<CausalLM> make_llama(const ModelConfig& cfg, const std::string& dir, const WeightLoader& load,
                                     at::ScalarType dtype, at::Device device, const LayerSplit& split) {
  c10::InferenceMode guard;
  return std::make_shared<LlamaModel>(cfg, dir, load, dtype, device, split);
}

}  // namespace kvx::detail
