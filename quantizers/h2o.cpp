#include "quantizers/h2o.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "core/cache/token_codec.h"
#include "core/common/error.h"
#include "quantizers/selective_int8.h"

namespace kvx {
namespace {

class H2OPolicy final : public KVCachePolicy {
 public:
  H2OPolicy(int64_t heavy, int64_t recent) : heavy_(heavy), recent_(recent) {
    if (heavy_ < 0 || recent_ < 1) throw error("h2o: need heavy >= 0 and recent >= 1 (got {}, {})", heavy_, recent_);
  }

  void reset(const ModelInfo& m, int64_t batch) override {
    layers_.assign(size_t(m.n_layers), Layer{});
    seen_ = 0;
  }

  AttnInputs update(int layer, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s) override {
    if (layer < 0 || layer >= int(layers_.size())) throw error("h2o: layer {} out of range (reset() first?)", layer);
    Layer& L = layers_[size_t(layer)];
    if (s.pos0 != seen_) throw error("h2o: layer {} got a chunk at position {} after {} tokens", layer, s.pos0, seen_);
    const int64_t n = k_new.size(2), H = k_new.size(1);
    const auto lopt = at::TensorOptions().dtype(at::kLong).device(k_new.device());
    at::Tensor npos = at::arange(s.pos0, s.pos0 + n, lopt).unsqueeze(0).expand({H, n});
    if (L.k.defined()) {
      L.k = at::cat({L.k, k_new}, 2);
      L.v = at::cat({L.v, v_new}, 2);
      L.pos = at::cat({L.pos, npos}, 1);
      L.score = at::cat({L.score, at::zeros({H, n}, at::kDouble)}, 1);
    } else {
      L.k = k_new.clone();
      L.v = v_new.clone();
      L.pos = npos.clone();
      L.score = at::zeros({H, n}, at::kDouble);
    }
    AttnInputs out;
    out.k = L.k;
    out.v = L.v;
    out.head_pos = L.pos;
    out.key_pos = L.pos[0];
    out.n_cached = L.k.size(2) - n;
    return out;
  }

  bool wants_attention() const override { return true; }

  void observe_attention(int layer, const at::Tensor& probs, const StepInfo& s) override {
    Layer& L = layers_[size_t(layer)];
    const int64_t B = probs.size(0), Hq = probs.size(1), T = probs.size(2), N = probs.size(3);
    const int64_t H = L.score.size(0);
    L.score.add_(probs.to(at::kDouble).sum(2).sum(0).view({H, Hq / H, N}).sum(1).to(at::kCPU));
    (void)B;
    (void)T;
  }

  void end_step(const StepInfo& s) override {
    seen_ = s.pos0 + s.n_new;
    for (auto& L : layers_) evict(L);
  }

  MemoryReport memory() const override {
    SegmentTally t;
    int64_t kept = 0, sc = 0;
    for (const auto& L : layers_) {
      t.add("k.kept", L.k.defined() ? L.k.numel() : 0, fp_bits(L.k));
      t.add("v.kept", L.v.defined() ? L.v.numel() : 0, fp_bits(L.v));
      kept = L.k.defined() ? L.k.size(2) : 0;
      sc += L.score.defined() ? L.score.numel() : 0;
    }
    MemoryReport r;
    t.to_report(r);
    if (sc) r.segments.push_back({"scores", sc, sc * 32, MemorySegment::kOffload});
    r.tokens_seen = seen_;
    r.tokens_kept = kept;
    return r;
  }

  std::string name() const override { return "h2o"; }

 private:
  struct Layer {
    at::Tensor k, v;  // [B, H, n, D]
    at::Tensor pos;   // [H, n] positions per head, ascending
    at::Tensor score; // [H, n] cumulative attention (host, double)
  };

  void evict(Layer& L) {
    if (!L.k.defined()) return;
    const int64_t n = L.k.size(2), H = L.k.size(1), keep = heavy_ + recent_;
    if (n <= keep) return;
    std::vector<int64_t> idx;
    idx.reserve(size_t(H * keep));
    at::Tensor sc = L.score.contiguous();
    const double* p = sc.data_ptr<double>();
    for (int64_t h = 0; h < H; ++h) {
      const double* row = p + h * n;
      std::vector<int64_t> old(size_t(n - recent_));
      std::iota(old.begin(), old.end(), 0);
      std::sort(old.begin(), old.end(), [&](int64_t a, int64_t b) {
        if (row[a] != row[b]) return row[a] > row[b];
        return a > b;  // ties -> more recent
      });
      old.resize(size_t(heavy_));
      std::sort(old.begin(), old.end());
      for (int64_t i : old) idx.push_back(i);
      for (int64_t i = n - recent_; i < n; ++i) idx.push_back(i);
    }
    at::Tensor ih = at::tensor(idx, at::TensorOptions().dtype(at::kLong)).view({H, keep});
    at::Tensor id = ih.to(L.k.device());
    const int64_t B = L.k.size(0), D = L.k.size(3);
    at::Tensor g = id.view({1, H, keep, 1}).expand({B, H, keep, D});
    L.k = L.k.gather(2, g).contiguous();
    L.v = L.v.gather(2, g).contiguous();
    L.pos = L.pos.gather(1, id).contiguous();
    L.score = L.score.gather(1, ih).contiguous();
  }

  int64_t heavy_, recent_;
  std::vector<Layer> layers_;
  int64_t seen_ = 0;
};

void check(const nlohmann::json& m) { require_no_codecs(m, "h2o"); }

std::unique_ptr<KVCachePolicy> make(const nlohmann::json& m) {
  return make_h2o_policy(m.at("policy").at("heavy").get<int64_t>(), m.at("policy").at("recent").get<int64_t>());
}

std::string label(const nlohmann::json& m) {
  return fmt::format("h2o h{} r{}", m["policy"]["heavy"].get<int64_t>(), m["policy"]["recent"].get<int64_t>());
}

}  // namespace

std::unique_ptr<KVCachePolicy> make_h2o_policy(int64_t heavy, int64_t recent) {
  return std::make_unique<H2OPolicy>(heavy, recent);
}

MethodTraits h2o_traits() {
  MethodTraits t;
  t.name = "h2o";
  t.kind = ComponentKind::Policy;
  t.summary = "eviction: per layer/KV head keep `recent` newest + `heavy` top cumulative-attention entries (H2O); "
              "scores summed over batch";
  t.params = {
      {"heavy", ParamType::Int, 64, 0, 1 << 30, {}, "heavy hitters kept per layer and KV head"},
      {"recent", ParamType::Int, 64, 1, 1 << 30, {}, "most recent entries kept per layer and KV head"},
  };
  t.bits = "16";
  t.needs_attention = true;
  t.check = check;
  t.make_policy = make;
  t.label = label;
  return t;
}

}  // namespace kvx
