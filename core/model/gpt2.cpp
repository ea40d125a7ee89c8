// GPT-2 forward: learned absolute positions, pre-LayerNorm blocks, fused c_attn, gelu_new MLP,
// head tied to the token embedding. Conv1D weights are stored [in, out] and transposed at load
// so every projection is one at::linear.
#include <c10/core/InferenceMode.h>

#include <optional>

#include "core/common/error.h"
#include "core/model/model_impl.h"

namespace kvx::detail {
namespace {

class Gpt2Model final : public CausalLM {
 public:
  Gpt2Model(const ModelConfig& cfg, const std::string& dir, Checkpoint& ck, at::ScalarType dt, at::Device dev,
            const LayerSplit& sp)
      : CausalLM(cfg, dir, dt, dev, sp) {
    const int64_t E = cfg.hidden_size, I = cfg.intermediate_size, V = cfg.vocab_size, P = cfg.max_positions;
    // transformers saves GPT2LMHeadModel with a "transformer." prefix; bare GPT2Model without.
    pre_ = ck.has("transformer.wte.weight") ? "transformer." : "";
    const std::string& pre = pre_;
    at::Device cur = dev;  // a split puts each layer on its own device, the head on the last
    auto load = [&](const std::string& name, std::vector<int64_t> shape) {
      return ck.load(pre + name, shape, dt, cur);
    };
    auto conv1d = [&](const std::string& name, int64_t in, int64_t out) {
      return load(name, {in, out}).t().contiguous();  // [in, out] -> [out, in] for at::linear
    };
    wte_ = load("wte.weight", {V, E});
    wpe_ = load("wpe.weight", {P, E});
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
      const std::string p = "h." + std::to_string(l) + ".";
      cur = layer_device(l);
      Layer L;
      L.ln1w = load(p + "ln_1.weight", {E});
      L.ln1b = load(p + "ln_1.bias", {E});
      L.wqkv = conv1d(p + "attn.c_attn.weight", E, 3 * E);
      L.bqkv = load(p + "attn.c_attn.bias", {3 * E});
      L.wo = conv1d(p + "attn.c_proj.weight", E, E);
      L.bo = load(p + "attn.c_proj.bias", {E});
      L.ln2w = load(p + "ln_2.weight", {E});
      L.ln2b = load(p + "ln_2.bias", {E});
      L.wfc = conv1d(p + "mlp.c_fc.weight", E, I);
      L.bfc = load(p + "mlp.c_fc.bias", {I});
      L.wproj = conv1d(p + "mlp.c_proj.weight", I, E);
      L.bproj = load(p + "mlp.c_proj.bias", {E});
      layers_.push_back(std::move(L));
    }
    cur = head_device();
    lnfw_ = load("ln_f.weight", {E});
    lnfb_ = load("ln_f.bias", {E});
    head_ = cfg.tie_word_embeddings ? wte_.to(cur) : ck.load("lm_head.weight", {V, E}, dt, cur);  // same device: no copy
  }

  at::Tensor forward(const at::Tensor& ids_in, int64_t pos0, KVCachePolicy& cache) override {
    std::optional<c10::InferenceMode> guard;  // training: autograd as the caller's grad mode says
    if (!training_) guard.emplace();
    at::Tensor ids = check_ids(ids_in, cfg_.vocab_size, device_);
    const int64_t B = ids.size(0), T = ids.size(1), E = cfg_.hidden_size, H = cfg_.n_heads, D = cfg_.head_dim;
    if (pos0 < 0 || pos0 + T > cfg_.max_positions)
      throw error("{}: positions {}..{} exceed GPT-2's n_positions = {} (learned position table)", path_, pos0,
                  pos0 + T - 1, cfg_.max_positions);
    StepInfo step;
    step.pos0 = pos0;
    step.n_new = T;
    step.rope = nullptr;
    at::Tensor x = at::embedding(wte_, ids) + wpe_.narrow(0, pos0, T).unsqueeze(0);
    for (int64_t l = 0; l < cfg_.n_layers; ++l) {
      const Layer& L = layers_[l];
      if (split()) x = x.to(layer_device(l));  // pipeline split: the hidden state follows the layers
      at::Tensor qkv = batch_linear(at::layer_norm(x, {E}, L.ln1w, L.ln1b, cfg_.norm_eps), L.wqkv, L.bqkv);
      at::Tensor q = qkv.narrow(-1, 0, E).view({B, T, H, D}).transpose(1, 2);
      at::Tensor k = qkv.narrow(-1, E, E).view({B, T, H, D}).transpose(1, 2).contiguous();
      at::Tensor v = qkv.narrow(-1, 2 * E, E).view({B, T, H, D}).transpose(1, 2).contiguous();
      AttentionOptions opt;
      opt.scale = 1.0 / std::sqrt(double(D));
      if (cfg_.scale_attn_by_inverse_layer_idx) opt.scale /= double(l + 1);
      at::Tensor a = cache.attend(static_cast<int>(l), q, k, v, step, opt);
      x = x + batch_linear(a, L.wo, L.bo);
      at::Tensor h = batch_linear(at::layer_norm(x, {E}, L.ln2w, L.ln2b, cfg_.norm_eps), L.wfc, L.bfc);
      x = x + batch_linear(activation(h), L.wproj, L.bproj);
    }
    cache.end_step(step);
    if (split()) x = x.to(head_device());
    return batch_linear(at::layer_norm(x, {E}, lnfw_, lnfb_, cfg_.norm_eps), head_).to(at::kFloat);
  }

  void enable_training() override {
    if (training_) return;
    for (at::Tensor* w : weights()) *w = trainable_copy(*w);
    if (cfg_.tie_word_embeddings) head_ = wte_;
    training_ = true;
  }

  std::vector<at::Tensor> parameters() const override {
    std::vector<at::Tensor> out;
    for (at::Tensor* w : const_cast<Gpt2Model*>(this)->weights())
      if (w->defined()) out.push_back(*w);
    return out;
  }

  std::vector<std::pair<std::string, at::Tensor>> hf_state_dict() const override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    auto put = [&](const std::string& name, const at::Tensor& t) {
      out.emplace_back(pre_ + name, t.detach().contiguous());
    };
    auto conv1d = [&](const std::string& name, const at::Tensor& t) { put(name, t.t()); };  // back to [in, out]
    put("wte.weight", wte_);
    put("wpe.weight", wpe_);
    for (int64_t l = 0; l < cfg_.n_layers; ++l) {
      const std::string p = "h." + std::to_string(l) + ".";
      const Layer& L = layers_[size_t(l)];
      put(p + "ln_1.weight", L.ln1w);
      put(p + "ln_1.bias", L.ln1b);
      conv1d(p + "attn.c_attn.weight", L.wqkv);
      put(p + "attn.c_attn.bias", L.bqkv);
      conv1d(p + "attn.c_proj.weight", L.wo);
      put(p + "attn.c_proj.bias", L.bo);
      put(p + "ln_2.weight", L.ln2w);
      put(p + "ln_2.bias", L.ln2b);
      conv1d(p + "mlp.c_fc.weight", L.wfc);
      put(p + "mlp.c_fc.bias", L.bfc);
      conv1d(p + "mlp.c_proj.weight", L.wproj);
      put(p + "mlp.c_proj.bias", L.bproj);
    }
    put("ln_f.weight", lnfw_);
    put("ln_f.bias", lnfb_);
    if (!cfg_.tie_word_embeddings) out.emplace_back("lm_head.weight", head_.detach().contiguous());
    return out;
  }

 private:
  // Every weight once (the tied head is not listed: it aliases wte_).
  std::vector<at::Tensor*> weights() {
    std::vector<at::Tensor*> w = {&wte_, &wpe_};
    for (Layer& L : layers_)
      for (at::Tensor* t : {&L.ln1w, &L.ln1b, &L.wqkv, &L.bqkv, &L.wo, &L.bo, &L.ln2w, &L.ln2b, &L.wfc, &L.bfc,
                            &L.wproj, &L.bproj})
        w.push_back(t);
    w.push_back(&lnfw_);
    w.push_back(&lnfb_);
    if (!cfg_.tie_word_embeddings) w.push_back(&head_);
    return w;
  }

  at::Tensor activation(const at::Tensor& h) const {
    if (cfg_.activation == "gelu_new") return at::gelu(h, "tanh");
    if (cfg_.activation == "gelu") return at::gelu(h);
    return at::relu(h);
  }

  struct Layer {
    at::Tensor ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, wfc, bfc, wproj, bproj;
  };
  at::Tensor wte_, wpe_, lnfw_, lnfb_, head_;
  std::string pre_;  // "transformer." when the checkpoint was saved from GPT2LMHeadModel
  std::vector<Layer> layers_;
};

}  // namespace

std::shared_ptr<CausalLM> make_gpt2(const ModelConfig& cfg, const std::string& dir, Checkpoint& ckpt,
                                    at::ScalarType dtype, at::Device device, const LayerSplit& split) {
  c10::InferenceMode guard;
  return std::make_shared<Gpt2Model>(cfg, dir, ckpt, dtype, device, split);
}

}  // namespace kvx::detail
