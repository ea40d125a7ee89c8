#include "quantizers/sink_window.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>

#include "core/cache/token_codec.h"
#include "core/common/error.h"
#include "quantizers/selective_int8.h"

namespace kvx {
namespace {

at::Tensor cat2(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined() || a.size(2) == 0) return b;
  if (!b.defined() || b.size(2) == 0) return a;
  return at::cat({a, b}, 2);
}

class SinkWindowPolicy final : public KVCachePolicy {
 public:
  SinkWindowPolicy(int64_t sink, int64_t window) : S_(sink), W_(window) {
    if (S_ < 0 || W_ < 1) throw error("sink_window: need sink_size >= 0 and window_size >= 1 (got {}, {})", S_, W_);
  }

  void reset(const ModelInfo& m, int64_t batch) override {
    layers_.clear();
    layers_.resize(size_t(m.n_layers));
    seen_ = 0;
  }

  AttnInputs update(int layer, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s) override {
    if (layer < 0 || layer >= int(layers_.size()))
      throw error("sink_window policy: layer {} out of range (reset() first?)", layer);
    Layer& L = layers_[size_t(layer)];
    if (s.pos0 != L.seen)
      throw error("sink_window policy: layer {} got a chunk at position {} after {} tokens", layer, s.pos0, L.seen);
    const int64_t n = k_new.size(2);
    const auto lopt = at::TensorOptions().dtype(at::kLong).device(k_new.device());
    const int64_t ns = L.sk.defined() ? L.sk.size(2) : 0;
    const int64_t nw = L.wk.defined() ? L.wk.size(2) : 0;

    AttnInputs out;
    out.k = cat2(cat2(L.sk, L.wk), k_new);
    out.v = cat2(cat2(L.sv, L.wv), v_new);
    out.key_pos = at::cat({at::arange(0, ns, lopt), at::arange(L.wstart, L.wstart + nw, lopt),
                           at::arange(s.pos0, s.pos0 + n, lopt)});
    out.n_cached = ns + nw;
    out.sink = S_;
    out.window = W_;

    // Keep positions < S in the sink and the last W positions (>= S) in the window.
    const int64_t n_sink = std::clamp<int64_t>(S_ - L.seen, 0, n);
    if (n_sink > 0) {
      L.sk = cat2(L.sk, k_new.narrow(2, 0, n_sink)).contiguous().clone();
      L.sv = cat2(L.sv, v_new.narrow(2, 0, n_sink)).contiguous().clone();
    }
    const int64_t total = L.seen + n;
    if (n > n_sink) {
      at::Tensor wk = cat2(L.wk, k_new.narrow(2, n_sink, n - n_sink));
      at::Tensor wv = cat2(L.wv, v_new.narrow(2, n_sink, n - n_sink));
      const int64_t wstart = std::max(S_, total - W_);
      const int64_t first = L.wk.defined() && L.wk.size(2) > 0 ? L.wstart : L.seen + n_sink;
      const int64_t drop = std::max<int64_t>(0, wstart - first);
      const int64_t keep = wk.size(2) - drop;
      // clone: evicted entries must really be freed, not kept alive under a view
      L.wk = wk.narrow(2, drop, keep).contiguous().clone();
      L.wv = wv.narrow(2, drop, keep).contiguous().clone();
      L.wstart = wstart;
    }
    L.seen = total;
    if (layer == int(layers_.size()) - 1) seen_ = total;
    return out;
  }

  MemoryReport memory() const override {
    SegmentTally t;
    int64_t kept = 0;
    for (const auto& L : layers_) {
      t.add("k.sink", L.sk.defined() ? L.sk.numel() : 0, fp_bits(L.sk));
      t.add("k.window", L.wk.defined() ? L.wk.numel() : 0, fp_bits(L.wk));
      t.add("v.sink", L.sv.defined() ? L.sv.numel() : 0, fp_bits(L.sv));
      t.add("v.window", L.wv.defined() ? L.wv.numel() : 0, fp_bits(L.wv));
      kept = (L.sk.defined() ? L.sk.size(2) : 0) + (L.wk.defined() ? L.wk.size(2) : 0);
    }
    MemoryReport r;
    t.to_report(r);
    r.tokens_seen = seen_;
    r.tokens_kept = kept;
    return r;
  }

  std::string name() const override { return "sink_window"; }

 private:
  struct Layer {
    at::Tensor sk, sv, wk, wv;  // sink (positions < S) and window (positions wstart ..)
    int64_t wstart = 0;
    int64_t seen = 0;
  };
  int64_t S_, W_;
  std::vector<Layer> layers_;
  int64_t seen_ = 0;
};

void check(const nlohmann::json& m) { require_no_codecs(m, "sink_window"); }

std::unique_ptr<KVCachePolicy> make(const nlohmann::json& m) {
  return make_sink_window_policy(m.at("policy").at("sink_size").get<int64_t>(),
                                 m.at("policy").at("window_size").get<int64_t>());
}

std::string label(const nlohmann::json& m) {
  return fmt::format("sink_window s{} w{}", m["policy"]["sink_size"].get<int64_t>(),
                     m["policy"]["window_size"].get<int64_t>());
}

}  // namespace

std::unique_ptr<KVCachePolicy> make_sink_window_policy(int64_t sink, int64_t window) {
  return std::make_unique<SinkWindowPolicy>(sink, window);
}

nlohmann::json parse_sink_window_shorthand(const std::string& text) {
  return parse_sink_window_style_shorthand(text, "sink_window");
}

MethodTraits sink_window_traits() {
  MethodTraits t;
  t.name = "sink_window";
  t.kind = ComponentKind::Policy;
  t.summary = "eviction: keep sinks + last window positions fp (StreamingLLM), exact per-query window mask";
  t.params = {
      {"sink_size", ParamType::Int, 16, 0, 1 << 30, {}, "first positions never evicted"},
      {"window_size", ParamType::Int, 32, 1, 1 << 30, {}, "most recent positions kept"},
  };
  t.bits = "16";
  t.batches = true;
  t.check = check;
  t.make_policy = make;
  t.label = label;
  return t;
}

}  // namespace kvx
