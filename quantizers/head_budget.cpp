#include "quantizers/head_budget.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <deque>
#include <numeric>

#include "core/cache/token_codec.h"
#include "core/common/error.h"

namespace kvx {
namespace {

class HeadBudgetPolicy final : public KVCachePolicy {
 public:
  explicit HeadBudgetPolicy(HeadBudgetConfig c) : c_(std::move(c)) {
    if (c_.sink < 0 || c_.recent < 1 || c_.obs_window < 1 || c_.prompt_len < 1 || !c_.decide)
      throw error("{}: invalid parameters (sink {}, recent {}, obs_window {}, prompt_len {})", c_.name, c_.sink,
                  c_.recent, c_.obs_window, c_.prompt_len);
  }

  void reset(const ModelInfo& m, int64_t batch) override {
    layers_.assign(size_t(m.n_layers), std::vector<Head>(size_t(m.n_kv_heads)));
    seen_ = 0;
    decided_ = false;
    budgets_.clear();
  }

  AttnInputs update(int layer, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s) override {
    if (layer < 0 || layer >= int(layers_.size())) throw error("{}: layer {} out of range (reset() first?)", c_.name, layer);
    if (s.pos0 != seen_) throw error("{}: layer {} got a chunk at position {} after {} tokens", c_.name, layer, s.pos0, seen_);
    auto& heads = layers_[size_t(layer)];
    const int64_t H = k_new.size(1), n = k_new.size(2), B = k_new.size(0), D = k_new.size(3);
    if (H != int64_t(heads.size())) throw error("{}: expected {} KV heads, got {}", c_.name, heads.size(), H);
    const auto lopt = at::TensorOptions().dtype(at::kLong).device(k_new.device());
    at::Tensor npos = at::arange(s.pos0, s.pos0 + n, lopt);
    int64_t N = 0;
    for (int64_t h = 0; h < H; ++h) {
      Head& hd = heads[size_t(h)];
      at::Tensor kh = k_new.select(1, h), vh = v_new.select(1, h);  // [B, n, D]
      if (hd.k.defined()) {
        hd.k = at::cat({hd.k, kh}, 1);
        hd.v = at::cat({hd.v, vh}, 1);
        hd.pos = at::cat({hd.pos, npos});
      } else {
        hd.k = kh.clone();
        hd.v = vh.clone();
        hd.pos = npos.clone();
      }
      N = std::max(N, entries(hd));
    }
    AttnInputs out;
    out.k = at::zeros({B, H, N, D}, k_new.options());
    out.v = at::zeros({B, H, N, D}, v_new.options());
    out.head_pos = at::full({H, N}, -2, lopt);
    for (int64_t h = 0; h < H; ++h) {
      Head& hd = heads[size_t(h)];
      int64_t off = 0;
      if (hd.ccount > 0) {
        out.k.select(1, h).narrow(1, 0, 1).copy_((hd.csum_k / double(hd.ccount)).unsqueeze(1));
        out.v.select(1, h).narrow(1, 0, 1).copy_((hd.csum_v / double(hd.ccount)).unsqueeze(1));
        out.head_pos[h][0] = -1;
        off = 1;
      }
      const int64_t m = hd.k.size(1);
      out.k.select(1, h).narrow(1, off, m).copy_(hd.k);
      out.v.select(1, h).narrow(1, off, m).copy_(hd.v);
      out.head_pos.select(0, h).narrow(0, off, m).copy_(hd.pos);
    }
    out.key_pos = std::get<0>(out.head_pos.max(0));  // informational; the mask uses head_pos
    out.n_cached = N - n;
    return out;
  }

  bool wants_attention() const override { return true; }

  void observe_attention(int layer, const at::Tensor& probs, const StepInfo& s) override {
    auto& heads = layers_[size_t(layer)];
    const int64_t H = int64_t(heads.size()), Hq = probs.size(1), T = probs.size(2), N = probs.size(3);
    at::Tensor p = probs.to(at::kDouble).sum(0).view({H, Hq / H, T, N}).sum(1).to(at::kCPU);  // [H, T, N]
    for (int64_t h = 0; h < H; ++h) {
      Head& hd = heads[size_t(h)];
      hd.rows.push_back(p[h].narrow(1, 0, entries(hd)).clone());  // columns = this head's entries
      int64_t total = 0;
      for (const auto& r : hd.rows) total += r.size(0);
      while (total > c_.obs_window) {
        const int64_t extra = total - c_.obs_window;
        if (hd.rows.front().size(0) <= extra) {
          total -= hd.rows.front().size(0);
          hd.rows.pop_front();
        } else {
          hd.rows.front() = hd.rows.front().narrow(0, extra, hd.rows.front().size(0) - extra).clone();
          total -= extra;
        }
      }
    }
  }

  void end_step(const StepInfo& s) override {
    seen_ = s.pos0 + s.n_new;
    if (!decided_ && seen_ >= c_.prompt_len) {
      BudgetStats st;
      st.n = seen_;
      st.sink = c_.sink;
      st.recent = c_.recent;
      for (auto& heads : layers_) {
        st.scores.emplace_back();
        st.keys.emplace_back();
        for (auto& hd : heads) {
          st.scores.back().push_back(window_scores(hd).narrow(0, 0, seen_));  // no compensation yet
          st.keys.back().push_back(hd.k);
        }
      }
      budgets_ = c_.decide(st);
      if (budgets_.size() != layers_.size()) throw error("{}: budget rule returned {} layers", c_.name, budgets_.size());
      for (size_t l = 0; l < layers_.size(); ++l) {
        if (budgets_[l].size() != layers_[l].size()) throw error("{}: budget rule returned wrong head count", c_.name);
        for (auto& b : budgets_[l])
          if (b >= 0) b = std::max(b, c_.sink + c_.recent);
      }
      decided_ = true;
    }
    if (!decided_) return;
    for (size_t l = 0; l < layers_.size(); ++l)
      for (size_t h = 0; h < layers_[l].size(); ++h) evict(layers_[l][h], budgets_[l][h]);
  }

  MemoryReport memory() const override {
    SegmentTally t;
    int64_t kept = 0, sc = 0, comp = 0, comp_elems = 0;
    for (const auto& heads : layers_)
      for (const auto& hd : heads) {
        t.add("k.kept", hd.k.defined() ? hd.k.numel() : 0, fp_bits(hd.k));
        t.add("v.kept", hd.v.defined() ? hd.v.numel() : 0, fp_bits(hd.v));
        kept += hd.k.defined() ? hd.k.size(1) : 0;
        if (hd.ccount > 0) {
          ++comp;
          comp_elems += hd.csum_k.numel();
        }
        for (const auto& r : hd.rows) sc += r.numel();
      }
    if (comp) {
      t.add("k.compensation", comp_elems, comp_elems * 16);
      t.add("v.compensation", comp_elems, comp_elems * 16 + comp * 32);  // + the count per head
    }
    MemoryReport r;
    t.to_report(r);
    if (sc) r.segments.push_back({"scores", sc, sc * 32, MemorySegment::kOffload});
    r.tokens_seen = seen_;
    const int64_t nh = layers_.empty() ? 1 : int64_t(layers_.size() * layers_[0].size());
    r.tokens_kept = nh ? (kept + comp) / nh : 0;  // mean entries per (layer, head)
    return r;
  }

  std::string name() const override { return c_.name; }

  const std::vector<std::vector<int64_t>>& budgets() const { return budgets_; }

 private:
  struct Head {
    at::Tensor k, v;              // [B, n, D]
    at::Tensor pos;               // [n]
    at::Tensor csum_k, csum_v;    // [B, D] fp32 sums of dropped entries (compensation)
    int64_t ccount = 0;
    std::deque<at::Tensor> rows;  // last obs_window attention rows, columns = entries (comp first)
  };
  static int64_t entries(const Head& hd) { return (hd.ccount > 0 ? 1 : 0) + (hd.k.defined() ? hd.k.size(1) : 0); }

  // [entries] window score per entry (compensation entry first when present), double CPU
  static at::Tensor window_scores(const Head& hd) {
    at::Tensor s = at::zeros({entries(hd)}, at::kDouble);
    for (const auto& r : hd.rows) s.narrow(0, 0, r.size(1)).add_(r.sum(0));
    return s;
  }

  void evict(Head& hd, int64_t budget) {
    const int64_t n = hd.k.size(1);
    if (budget < 0 || n <= budget) return;
    const int64_t off = hd.ccount > 0 ? 1 : 0;
    at::Tensor sc = window_scores(hd).narrow(0, off, n).contiguous();
    const double* p = sc.data_ptr<double>();
    at::Tensor posc = hd.pos.to(at::kCPU).contiguous();
    const int64_t* pos = posc.data_ptr<int64_t>();
    std::vector<char> keep(size_t(n), 0);
    int64_t kept = 0;
    for (int64_t i = n - c_.recent; i < n; ++i) keep[size_t(i)] = 1, ++kept;
    for (int64_t i = 0; i < n - c_.recent; ++i)
      if (pos[i] < c_.sink) keep[size_t(i)] = 1, ++kept;
    std::vector<int64_t> cand;
    for (int64_t i = 0; i < n; ++i)
      if (!keep[size_t(i)]) cand.push_back(i);
    std::sort(cand.begin(), cand.end(), [&](int64_t a, int64_t b) {
      if (p[a] != p[b]) return p[a] > p[b];
      return a > b;
    });
    for (size_t j = 0; j < cand.size() && kept < budget; ++j) keep[size_t(cand[j])] = 1, ++kept;
    std::vector<int64_t> idx, drop;
    for (int64_t i = 0; i < n; ++i) (keep[size_t(i)] ? idx : drop).push_back(i);
    const auto dev = hd.k.device();
    at::Tensor ik = at::tensor(idx, at::TensorOptions().dtype(at::kLong));
    if (c_.compensation && !drop.empty()) {
      at::Tensor id = at::tensor(drop, at::TensorOptions().dtype(at::kLong)).to(dev);
      at::Tensor dk = hd.k.index_select(1, id).to(at::kFloat).sum(1), dv = hd.v.index_select(1, id).to(at::kFloat).sum(1);
      if (hd.ccount == 0) {
        hd.csum_k = dk;
        hd.csum_v = dv;
      } else {
        hd.csum_k = hd.csum_k + dk;
        hd.csum_v = hd.csum_v + dv;
      }
      hd.ccount += int64_t(drop.size());
    }
    at::Tensor ikd = ik.to(dev);
    hd.k = hd.k.index_select(1, ikd).contiguous();
    hd.v = hd.v.index_select(1, ikd).contiguous();
    hd.pos = hd.pos.index_select(0, ikd).contiguous();
    // remap the score rows: new layout = [compensation?] + kept entries
    const int64_t noff = hd.ccount > 0 ? 1 : 0;
    for (auto& r : hd.rows) {
      at::Tensor nr = at::zeros({r.size(0), noff + int64_t(idx.size())}, at::kDouble);
      if (noff && off) nr.narrow(1, 0, 1).copy_(r.narrow(1, 0, 1));
      std::vector<int64_t> src, dst;
      for (size_t j = 0; j < idx.size(); ++j)
        if (off + idx[j] < r.size(1)) src.push_back(off + idx[j]), dst.push_back(noff + int64_t(j));
      if (!src.empty())
        nr.index_copy_(1, at::tensor(dst, at::kLong), r.index_select(1, at::tensor(src, at::kLong)));
      r = nr;
    }
  }

  HeadBudgetConfig c_;
  std::vector<std::vector<Head>> layers_;
  std::vector<std::vector<int64_t>> budgets_;
  int64_t seen_ = 0;
  bool decided_ = false;
};

}  // namespace

std::unique_ptr<KVCachePolicy> make_head_budget_policy(HeadBudgetConfig c) {
  return std::make_unique<HeadBudgetPolicy>(std::move(c));
}

HeadBudgetConfig head_budget_config(const std::string& name, const nlohmann::json& policy) {
  HeadBudgetConfig c;
  c.name = name;
  c.sink = policy.at("sink_size").get<int64_t>();
  c.recent = policy.at("window_size").get<int64_t>();
  c.prompt_len = policy.at("prompt_len").get<int64_t>();
  c.obs_window = policy.at("obs_window").get<int64_t>();
  return c;
}

MethodTraits head_budget_traits(const char* name, const char* summary, std::vector<ParamSpec> own, int64_t window) {
  MethodTraits t;
  t.name = name;
  t.kind = ComponentKind::Policy;
  t.summary = summary;
  t.params = std::move(own);
  t.params.insert(t.params.end(),
                  {{"sink_size", ParamType::Int, 4, 0, 1 << 30, {}, "first positions every head keeps"},
                   {"window_size", ParamType::Int, window, 1, 1 << 30, {}, "newest entries every head keeps"},
                   {"prompt_len", ParamType::Int, 128, 1, 1 << 30, {}, "tokens held in full before the budget rule runs"},
                   {"obs_window", ParamType::Int, 32, 1, 1 << 30, {}, "last query rows whose attention scores the entries"}});
  t.bits = "16";
  t.needs_attention = true;
  return t;
}

std::string head_budget_label(const std::string& head, const nlohmann::json& resolved) {
  const auto& p = resolved["policy"];
  return fmt::format("{} s{} w{}", head, p["sink_size"].get<int64_t>(), p["window_size"].get<int64_t>());
}

}  // namespace kvx
