#include "quantizers/attention_prune.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <numeric>

#include "core/cache/token_codec.h"
#include "core/common/error.h"
#include "quantizers/kmeans.h"
#include "quantizers/selective_int8.h"

namespace kvx {
namespace {

at::Tensor cat2(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined() || a.size(2) == 0) return b;
  if (!b.defined() || b.size(2) == 0) return a;
  return at::cat({a, b}, 2);
}
int64_t len(const at::Tensor& t) { return t.defined() ? t.size(2) : 0; }

class AttentionPrunePolicy final : public KVCachePolicy {
 public:
  explicit AttentionPrunePolicy(AttentionPruneConfig c) : c_(std::move(c)) {
    if (c_.max_cache_size < 1 || c_.num_clusters < 1 || c_.pruning_interval < 1 || c_.lookback_window < 1 ||
        !(c_.learning_rate > 0 && c_.learning_rate <= 1))
      throw error("{}: invalid parameters (B {}, K {}, P {}, lookback {}, eta {})", c_.name, c_.max_cache_size,
                  c_.num_clusters, c_.pruning_interval, c_.lookback_window, c_.learning_rate);
  }

  void reset(const ModelInfo& m, int64_t batch) override {
    layers_.assign(size_t(m.n_layers), Layer{});
    seen_ = since_ = 0;
    ring_.clear();
    acc_ = at::Tensor();
    clustered_ = false;
  }

  AttnInputs update(int layer, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s) override {
    if (layer < 0 || layer >= int(layers_.size())) throw error("{}: layer {} out of range (reset() first?)", c_.name, layer);
    Layer& L = layers_[size_t(layer)];
    if (s.pos0 != seen_) throw error("{}: layer {} got a chunk at position {} after {} tokens", c_.name, layer, s.pos0, seen_);
    const int64_t n = k_new.size(2);
    const auto lopt = at::TensorOptions().dtype(at::kLong).device(k_new.device());
    if (!L.tk.defined() || L.tk.size(2) == 0) L.tstart = s.pos0;
    AttnInputs out;
    out.k = cat2(cat2(L.hk, L.tk), k_new);
    out.v = cat2(cat2(L.hv, L.tv), v_new);
    at::Tensor hpos = L.hpos.defined() ? L.hpos : at::empty({0}, lopt);
    out.key_pos = at::cat({hpos, at::arange(L.tstart, s.pos0 + n, lopt)});
    out.n_cached = out.k.size(2) - n;
    L.tk = cat2(L.tk, k_new).contiguous();
    L.tv = cat2(L.tv, v_new).contiguous();
    if (L.tk.is_same(k_new)) { L.tk = k_new.clone(); L.tv = v_new.clone(); }
    return out;
  }

  bool wants_attention() const override { return c_.use_attention; }

  void observe_attention(int layer, const at::Tensor& probs, const StepInfo& s) override {
    at::Tensor rows = probs.to(at::kFloat).sum(0).sum(0).to(at::kCPU);  // [n_new, N]
    if (layer == 0 || !acc_.defined() || !acc_.sizes().equals(rows.sizes()))
      acc_ = rows.clone();
    else
      acc_.add_(rows);
  }

  void end_step(const StepInfo& s) override {
    seen_ = s.pos0 + s.n_new;
    since_ += s.n_new;
    if (acc_.defined()) {
      ring_.push_back(acc_);
      acc_ = at::Tensor();
      int64_t total = 0;
      for (const auto& r : ring_) total += r.size(0);
      while (total > c_.lookback_window) {
        const int64_t extra = total - c_.lookback_window;
        if (ring_.front().size(0) <= extra) {
          total -= ring_.front().size(0);
          ring_.pop_front();
        } else {
          ring_.front() = ring_.front().narrow(0, extra, ring_.front().size(0) - extra).clone();
          total -= extra;
        }
      }
    }
    const int64_t N = layers_.empty() ? 0 : entries(layers_[0]);
    if (since_ >= c_.pruning_interval && N > c_.max_cache_size) prune(N);
  }

  MemoryReport memory() const override {
    SegmentTally t;
    int64_t kept = 0;
    for (const auto& L : layers_) {
      const char* hk = clustered_ ? "k.centroids" : "k.kept";
      const char* hv = clustered_ ? "v.centroids" : "v.kept";
      t.add(hk, L.hk.defined() ? L.hk.numel() : 0, fp_bits(L.hk));
      t.add(hv, L.hv.defined() ? L.hv.numel() : 0, fp_bits(L.hv));
      t.add("k.recent", L.tk.defined() ? L.tk.numel() : 0, fp_bits(L.tk));
      t.add("v.recent", L.tv.defined() ? L.tv.numel() : 0, fp_bits(L.tv));
      kept = entries(L);
    }
    MemoryReport r;
    t.to_report(r);
    // score bookkeeping (the last Δ attention rows) lives in host memory: offload, not bpv
    int64_t rows = 0;
    for (const auto& x : ring_) rows += x.numel();
    if (rows) r.segments.push_back({"scores.rows", rows, rows * 32, MemorySegment::kOffload});
    r.tokens_seen = seen_;
    r.tokens_kept = kept;
    return r;
  }

  std::string name() const override { return c_.name; }

 private:
  struct Layer {
    at::Tensor hk, hv, hpos;  // head block: survivors of the last prune or centroids (hpos -1)
    at::Tensor tk, tv;        // tokens appended since, positions tstart..
    int64_t tstart = 0;
    bool mu_init = false;     // centroids created (k-means state lives in hk / hv from then on)
  };
  static int64_t entries(const Layer& L) { return len(L.hk) + len(L.tk); }

  void prune(int64_t N) {
    const int64_t B = c_.max_cache_size;
    std::vector<double> score(size_t(N), 0.0);
    for (const auto& r : ring_) {
      at::Tensor s = r.sum(0).to(at::kDouble).contiguous();
      const double* p = s.data_ptr<double>();
      for (int64_t i = 0; i < std::min<int64_t>(N, s.size(0)); ++i) score[size_t(i)] += p[i];
    }
    std::vector<int64_t> order(static_cast<size_t>(N));
    std::iota(order.begin(), order.end(), 0);
    // highest score first; ties -> the more recent entry (later cache index)
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      if (score[size_t(a)] != score[size_t(b)]) return score[size_t(a)] > score[size_t(b)];
      return a > b;
    });
    order.resize(size_t(B));
    std::sort(order.begin(), order.end());
    const bool cluster = c_.num_clusters < B;
    for (auto& L : layers_) {
      const auto dev = L.tk.defined() ? L.tk.device() : L.hk.device();
      const auto lopt = at::TensorOptions().dtype(at::kLong).device(dev);
      at::Tensor idx = at::tensor(order, at::TensorOptions().dtype(at::kLong)).to(dev);
      at::Tensor fk = cat2(L.hk, L.tk), fv = cat2(L.hv, L.tv);
      at::Tensor hpos = L.hpos.defined() ? L.hpos : at::empty({0}, lopt);
      at::Tensor fpos = at::cat({hpos, at::arange(L.tstart, L.tstart + len(L.tk), lopt)});
      at::Tensor kk = fk.index_select(2, idx).contiguous(), kv = fv.index_select(2, idx).contiguous();
      at::Tensor kp = fpos.index_select(0, idx);
      if (cluster) {
        if (!L.mu_init) {
          std::vector<int64_t> init = c_.init_indices.empty()
                                          ? kmeans_init_indices(B, c_.num_clusters, c_.seed)
                                          : c_.init_indices;
          if (int64_t(init.size()) != c_.num_clusters) throw error("{}: k-means init needs {} indices", c_.name, c_.num_clusters);
          at::Tensor ii = at::tensor(init, at::TensorOptions().dtype(at::kLong)).to(dev);
          L.hk = kk.index_select(2, ii).contiguous();  // centroids start as kept entries
          L.hv = kv.index_select(2, ii).contiguous();
          L.mu_init = true;
        }
        // the stored centroids (head block) are the persistent state mu / nu; note a later
        // prune may drop centroid entries from the kept set, the state itself persists.
        kmeans_update(L.hk, L.hv, kk, kv, c_.learning_rate, c_.sequential);
        L.hpos = at::full({c_.num_clusters}, -1, lopt);
        clustered_ = true;
      } else {
        L.hk = kk;
        L.hv = kv;
        L.hpos = kp;
      }
      L.tk = at::Tensor();
      L.tv = at::Tensor();
      L.tstart = seen_;
    }
    since_ = 0;
    ring_.clear();
  }

  AttentionPruneConfig c_;
  std::vector<Layer> layers_;
  int64_t seen_ = 0, since_ = 0;
  std::deque<at::Tensor> ring_;  // [rows, N_at_the_time] per step, last Δ rows in all
  at::Tensor acc_;               // this step's rows, summed over layers so far
  bool clustered_ = false;
};

}  // namespace

AttentionPruneConfig attention_prune_config(const nlohmann::json& m) {
  const auto& p = m.at("policy");
  AttentionPruneConfig c;
  c.max_cache_size = p.at("max_cache_size").get<int64_t>();
  c.num_clusters = p.at("num_clusters").get<int64_t>();
  c.pruning_interval = p.at("pruning_interval").get<int64_t>();
  c.lookback_window = p.at("lookback_window").get<int64_t>();
  c.learning_rate = p.at("kmeans_learning_rate").get<double>();
  c.sequential = p.at("kmeans_sequential").get<bool>();
  c.seed = uint64_t(p.at("seed").get<int64_t>());
  c.name = p.at("type").get<std::string>();
  return c;
}

void attention_prune_check(const nlohmann::json& m) { require_no_codecs(m, m["policy"]["type"].get<std::string>()); }

std::unique_ptr<KVCachePolicy> make_attention_prune_policy(const AttentionPruneConfig& c) {
  return std::make_unique<AttentionPrunePolicy>(c);
}

namespace {
std::unique_ptr<KVCachePolicy> make(const nlohmann::json& m) { return make_attention_prune_policy(attention_prune_config(m)); }

std::string label(const nlohmann::json& m) {
  const auto& p = m["policy"];
  const bool cl = p["num_clusters"].get<int64_t>() < p["max_cache_size"].get<int64_t>();
  return fmt::format("{} B{} {}P{} d{}{}", p["type"].get<std::string>(), p["max_cache_size"].get<int64_t>(),
                     cl ? fmt::format("K{} ", p["num_clusters"].get<int64_t>()) : std::string("noclust "),
                     p["pruning_interval"].get<int64_t>(), p["lookback_window"].get<int64_t>(),
                     p["kmeans_sequential"].get<bool>() ? " seq" : "");
}
}  // namespace

MethodTraits attention_prune_traits() {
  MethodTraits t;
  t.name = "attention_prune";
  t.kind = ComponentKind::Policy;
  t.summary = "seed 003 adaptive: every P tokens keep top-B by attention of last Δ queries (all layers+heads), then "
              "online k-means to K centroids if K<B; simplification: scores summed over batch, no distillation here";
  t.params = {
      {"max_cache_size", ParamType::Int, 1024, 1, 1 << 30, {}, "B: entries kept after pruning"},
      {"num_clusters", ParamType::Int, 256, 1, 1 << 30, {}, "K: centroids; clustering only when K < B"},
      {"pruning_interval", ParamType::Int, 512, 1, 1 << 30, {}, "P: tokens between pruning events"},
      {"lookback_window", ParamType::Int, 256, 1, 1 << 30, {}, "Δ: recent query rows whose attention is summed"},
      {"kmeans_learning_rate", ParamType::Float, 0.01, 1e-9, 1.0, {}, "η: centroid update rate"},
      {"kmeans_sequential", ParamType::Bool, false, 0, 0, {}, "per-vector k-means update instead of batch"},
      {"seed", ParamType::Int, 0, 0, 2147483647.0, {}, "k-means initialization seed"},
  };
  t.bits = "16";
  t.needs_attention = true;
  t.check = attention_prune_check;
  t.make_policy = make;
  t.label = label;
  return t;
}

}  // namespace kvx
