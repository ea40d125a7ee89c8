#include "quantizers/dynamic_kv.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <tuple>

#include "quantizers/selective_int8.h"

namespace kvx {

BudgetRule dynamic_kv_rule(int64_t budget) {
  return [budget](const BudgetStats& st) {
    const size_t L = st.scores.size(), H = L ? st.scores[0].size() : 0;
    std::vector<std::tuple<double, size_t, int64_t>> cand;  // score, layer, index
    for (size_t l = 0; l < L; ++l)
      for (size_t h = 0; h < H; ++h) {
        at::Tensor s = st.scores[l][h].to(at::kDouble).contiguous();
        const int64_t n = s.size(0);
        const double tot = s.sum().item<double>();
        const double* p = s.data_ptr<double>();
        for (int64_t i = std::min(st.sink, n); i < n - st.recent; ++i)
          cand.emplace_back(tot > 0 ? p[i] / tot : 0.0, l, i);
      }
    std::stable_sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) {
      if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) > std::get<0>(b);
      return std::get<2>(a) > std::get<2>(b);  // ties -> more recent
    });
    const int64_t per = std::max<int64_t>(0, budget - st.sink - st.recent);
    const size_t G = size_t(int64_t(L * H) * per);
    std::vector<int64_t> count(L, 0);
    for (size_t i = 0; i < std::min(G, cand.size()); ++i) ++count[std::get<1>(cand[i])];
    std::vector<std::vector<int64_t>> b(L);
    for (size_t l = 0; l < L; ++l) b[l].assign(H, st.sink + st.recent + count[l] / int64_t(H));
    return b;
  };
}

namespace {
void check(const nlohmann::json& m) { require_no_codecs(m, "dynamic_kv"); }

std::unique_ptr<KVCachePolicy> make(const nlohmann::json& m) {
  const auto& p = m.at("policy");
  HeadBudgetConfig c = head_budget_config("dynamic_kv", p);
  c.decide = dynamic_kv_rule(p.at("budget").get<int64_t>());
  return make_head_budget_policy(std::move(c));
}

std::string label(const nlohmann::json& m) {
  const auto& p = m["policy"];
  return head_budget_label(fmt::format("dynamic_kv b{}", p["budget"].get<int64_t>()), m);
}
}  // namespace

MethodTraits dynamic_kv_traits() {
  MethodTraits t = head_budget_traits("dynamic_kv",
      "DynamicKV: per-layer budgets from the prompt's window attention (global top-k over layers), tokens by "
      "window attention; simplification: budgets decided once after prompt_len tokens, no periodic re-balance",
      {{"budget", ParamType::Int, 128, 1, 1 << 30, {}, "average entries kept per layer and KV head (global budget / L·Hkv)"}},
      32);
  t.check = check;
  t.make_policy = make;
  t.label = label;
  return t;
}

}  // namespace kvx
