#include "core/cache/segment_policy.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <vector>

#include "core/common/error.h"

namespace kvx {
namespace {

at::Tensor cat_tokens(const std::vector<at::Tensor>& parts) {
  std::vector<at::Tensor> keep;
  for (const auto& p : parts)
    if (p.defined() && p.size(2) > 0) keep.push_back(p);
  if (keep.empty()) return at::Tensor();
  if (keep.size() == 1) return keep[0];
  return at::cat(keep, 2);
}

int64_t ntok(const at::Tensor& t) { return t.defined() ? t.size(2) : 0; }

// [a, b] along tokens in storage of its own: never a view that would pin the caller's chunk (b)
// in memory. at::cat already copies, so only a lone b is cloned.
at::Tensor owned_cat(const at::Tensor& a, const at::Tensor& b) {
  return ntok(a) == 0 ? b.clone(at::MemoryFormat::Contiguous) : at::cat({a, b}, 2);
}

// One of K or V of one layer.
struct Side {
  at::Tensor sink, resid;  // full precision, compute dtype
  std::vector<std::unique_ptr<CodedBlock>> body;
  // Working copy of [sink, decoded body, residual, chunk] in the compute dtype: what attention
  // reads. Nothing is evicted, so every token sits at its own position. The sink and residual
  // hold the chunks' own values, which were written there as chunks, so only the chunk and newly
  // encoded blocks are written: each block is decoded once, into its place (a RequantizeAll
  // flush replaces the body, so it is decoded again then). Capacity doubles as tokens arrive.
  at::Tensor view;
  size_t decoded = 0;       // body blocks [0, decoded) sit decoded in view ...
  int64_t decoded_end = 0;  // ... ending at this position
  int64_t in_view = 0;      // tokens the view held after the last assemble

  at::Tensor decode_body(at::ScalarType dtype) const {
    std::vector<at::Tensor> parts;
    for (const auto& b : body) parts.push_back(b->decode(dtype));
    return cat_tokens(parts);
  }
  // [sink, body, resid, x] as view.narrow(2, 0, held + n); held = tokens stored before x. Only
  // blocks past `decoded` are visited (a token-by-token sliding store holds one block per step).
  at::Tensor assemble(const at::Tensor& x, int64_t held) {
    const int64_t S = ntok(sink), R = ntok(resid), n = x.size(2), N = held + n;
    const bool rebuild = in_view != held;  // an update with gradients on went around the view
    if (!view.defined() || view.size(2) < N) {
      auto grown = at::empty({x.size(0), x.size(1), std::max<int64_t>(64, 2 * N), x.size(3)}, x.options());
      if (held > 0 && !rebuild) grown.narrow(2, 0, held).copy_(view.narrow(2, 0, held));
      view = grown;
    }
    if (rebuild) {
      decoded = 0;
      if (S > 0) view.narrow(2, 0, S).copy_(sink);
      if (R > 0) view.narrow(2, held - R, R).copy_(resid);
    }
    if (decoded == 0) decoded_end = S;
    for (; decoded < body.size(); ++decoded) {
      const int64_t t = body[decoded]->tokens();
      view.narrow(2, decoded_end, t).copy_(body[decoded]->decode(x.scalar_type()));
      decoded_end += t;
    }
    view.narrow(2, held, n).copy_(x);
    in_view = N;
    return view.narrow(2, 0, N);
  }
  void account(const std::string& prefix, SegmentTally& t) const {
    t.add(prefix + ".sink", sink.defined() ? sink.numel() : 0, fp_bits(sink));
    for (const auto& b : body) b->account(prefix, t);
    t.add(prefix + ".residual", resid.defined() ? resid.numel() : 0, fp_bits(resid));
  }
};

class SegmentsPolicy final : public KVCachePolicy {
 public:
  explicit SegmentsPolicy(SegmentsConfig c) : cfg_(std::move(c)) {
    if (!cfg_.key_codec) cfg_.key_codec = make_fp_codec();
    if (!cfg_.value_codec) cfg_.value_codec = make_fp_codec();
    if (cfg_.sink < 0 || cfg_.residual_length < 0)
      throw error("segments policy: sink and residual_length must be >= 0 (got {}, {})", cfg_.sink,
                  cfg_.residual_length);
  }

  void reset(const ModelInfo& m, int64_t batch) override {
    info_ = m;
    batch_ = batch;
    layers_.clear();
    layers_.resize(size_t(m.n_layers));
    seen_ = 0;
  }

  AttnInputs update(int layer, const at::Tensor& k_new, const at::Tensor& v_new,
                    const StepInfo& s) override {
    if (layer < 0 || layer >= int(layers_.size()))
      throw error("{} policy: layer {} out of range (model has {} layers; reset() first?)", cfg_.name,
                  layer, layers_.size());
    if (k_new.dim() != 4 || v_new.dim() != 4 || k_new.size(2) != v_new.size(2))
      throw error("{} policy: keys/values must be [B, Hkv, n, D] with equal n", cfg_.name);
    Layer& L = layers_[size_t(layer)];
    if (s.pos0 != L.len)
      throw error("{} policy: layer {} got a chunk at position {} but holds {} tokens (positions must be "
                  "contiguous from 0 after reset)", cfg_.name, layer, s.pos0, L.len);
    const int64_t n = k_new.size(2);
    if (n == 0) throw error("{} policy: update() with an empty chunk (layer {})", cfg_.name, layer);
    const at::ScalarType dt = k_new.scalar_type();

    AttnInputs out;
    at::Tensor deq_k, deq_v;  // the decoded body, re-encoded on a RequantizeAll flush
    if (at::GradMode::is_enabled() && (k_new.requires_grad() || v_new.requires_grad())) {
      // Training: the persistent view would be written in place under tensors saved for backward.
      deq_k = L.k.decode_body(dt);
      deq_v = L.v.decode_body(v_new.scalar_type());
      out.k = cat_tokens({L.k.sink, deq_k, L.k.resid, k_new});
      out.v = cat_tokens({L.v.sink, deq_v, L.v.resid, v_new});
    } else {
      out.k = L.k.assemble(k_new, L.len);
      out.v = L.v.assemble(v_new, L.len);
      // nothing is evicted: the body is everything held between the sink and the residual
      deq_k = out.k.narrow(2, ntok(L.k.sink), L.len - ntok(L.k.sink) - ntok(L.k.resid));
      deq_v = out.v.narrow(2, ntok(L.v.sink), L.len - ntok(L.v.sink) - ntok(L.v.resid));
    }
    const int64_t N = out.k.size(2);
    out.key_pos = at::arange(L.len + n - N, L.len + n, at::TensorOptions().dtype(at::kLong).device(k_new.device()));
    out.n_cached = N - n;

    // Store the chunk: positions < S to the sink, the rest by the flush rule.
    const int64_t n_sink = std::clamp<int64_t>(cfg_.sink - L.len, 0, n);
    if (n_sink > 0) {
      L.k.sink = owned_cat(L.k.sink, k_new.narrow(2, 0, n_sink));
      L.v.sink = owned_cat(L.v.sink, v_new.narrow(2, 0, n_sink));
    }
    if (n > n_sink) {
      const at::Tensor rk = k_new.narrow(2, n_sink, n - n_sink);
      const at::Tensor rv = v_new.narrow(2, n_sink, n - n_sink);
      if (cfg_.flush == FlushMode::Sliding)
        slide(L, rk, rv);
      else
        kvq_rule(L, rk, rv, deq_k, deq_v);
    }
    L.len += n;
    if (layer == int(layers_.size()) - 1) seen_ = L.len;
    return out;
  }

  MemoryReport memory() const override {
    SegmentTally t;
    for (const auto& L : layers_) {
      L.k.account("k", t);
      L.v.account("v", t);
    }
    MemoryReport r;
    t.to_report(r);
    r.tokens_seen = seen_;
    r.tokens_kept = seen_;
    return r;
  }

  std::string name() const override { return cfg_.name; }

 private:
  struct Layer {
    Side k, v;
    int64_t len = 0;       // tokens held (= next position)
    bool started = false;  // the body has been created (KVQ "first call" done)
    bool open = false;     // KVQ residual_open
  };

  void kvq_rule(Layer& L, const at::Tensor& rk, const at::Tensor& rv, const at::Tensor& deq_k,
                const at::Tensor& deq_v) {
    if (!L.started) {
      L.k.body.push_back(cfg_.key_codec->encode(rk));
      L.v.body.push_back(cfg_.value_codec->encode(rv));
      L.started = true;
      L.open = false;
      return;
    }
    if (L.open && ntok(L.k.resid) + 1 >= cfg_.residual_length) {
      if (cfg_.flush == FlushMode::RequantizeAll) {
        auto bk = cfg_.key_codec->encode(cat_tokens({deq_k, L.k.resid, rk}));
        auto bv = cfg_.value_codec->encode(cat_tokens({deq_v, L.v.resid, rv}));
        L.k.body.clear();
        L.v.body.clear();
        L.k.body.push_back(std::move(bk));
        L.v.body.push_back(std::move(bv));
        L.k.decoded = L.v.decoded = 0;
      } else {
        L.k.body.push_back(cfg_.key_codec->encode(cat_tokens({L.k.resid, rk})));
        L.v.body.push_back(cfg_.value_codec->encode(cat_tokens({L.v.resid, rv})));
      }
      L.k.resid = at::Tensor();
      L.v.resid = at::Tensor();
      L.open = false;
      return;
    }
    L.k.resid = owned_cat(L.k.resid, rk);
    L.v.resid = owned_cat(L.v.resid, rv);
    L.open = true;
  }

  void slide(Layer& L, const at::Tensor& rk, const at::Tensor& rv) {
    at::Tensor k = owned_cat(L.k.resid, rk);
    at::Tensor v = owned_cat(L.v.resid, rv);
    const int64_t excess = k.size(2) - cfg_.residual_length;
    if (excess > 0) {
      L.k.body.push_back(cfg_.key_codec->encode(k.narrow(2, 0, excess)));
      L.v.body.push_back(cfg_.value_codec->encode(v.narrow(2, 0, excess)));
      // clone: the residual must not pin the tokens that left it
      k = k.narrow(2, excess, cfg_.residual_length).clone(at::MemoryFormat::Contiguous);
      v = v.narrow(2, excess, cfg_.residual_length).clone(at::MemoryFormat::Contiguous);
    }
    L.k.resid = k;
    L.v.resid = v;
  }

  SegmentsConfig cfg_;
  ModelInfo info_;
  int64_t batch_ = 1;
  std::vector<Layer> layers_;
  int64_t seen_ = 0;
};

}  // namespace

std::unique_ptr<KVCachePolicy> make_segments_policy(SegmentsConfig cfg) {
  return std::make_unique<SegmentsPolicy>(std::move(cfg));
}

}  // namespace kvx
