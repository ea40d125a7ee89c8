#include "quantizers/razor.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "quantizers/selective_int8.h"

namespace kvx {

BudgetRule razor_rule(double fraction) {
  return [fraction](const BudgetStats& st) {
    const size_t L = st.scores.size(), H = L ? st.scores[0].size() : 0;
    std::vector<std::pair<double, size_t>> mass;
    for (size_t l = 0; l < L; ++l)
      for (size_t h = 0; h < H; ++h) {
        at::Tensor s = st.scores[l][h];
        const int64_t n = s.size(0);
        const double tot = s.sum().item<double>();
        const int64_t a = std::min(st.sink, n), b = std::max(a, n - st.recent);
        const double far = b > a ? s.narrow(0, a, b - a).sum().item<double>() : 0.0;
        mass.push_back({tot > 0 ? far / tot : 0.0, l * H + h});
      }
    std::stable_sort(mass.begin(), mass.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
    const size_t nret = size_t(std::ceil(fraction * double(L * H) - 1e-9));
    std::vector<std::vector<int64_t>> b(L, std::vector<int64_t>(H, st.sink + st.recent));
    for (size_t i = 0; i < std::min(nret, mass.size()); ++i) b[mass[i].second / H][mass[i].second % H] = -1;
    return b;
  };
}

namespace {
void check(const nlohmann::json& m) { require_no_codecs(m, "razor"); }

std::unique_ptr<KVCachePolicy> make(const nlohmann::json& m) {
  const auto& p = m.at("policy");
  HeadBudgetConfig c = head_budget_config("razor", p);
  c.compensation = true;
  c.decide = razor_rule(p.at("retrieval_fraction").get<double>());
  return make_head_budget_policy(std::move(c));
}

std::string label(const nlohmann::json& m) {
  const auto& p = m["policy"];
  return head_budget_label(fmt::format("razor r{:g}", p["retrieval_fraction"].get<double>()), m);
}
}  // namespace

MethodTraits razor_traits() {
  MethodTraits t = head_budget_traits("razor",
      "RazorAttention: retrieval heads keep all, others sinks+window+1 compensation token (mean of dropped); "
      "simplification: retrieval heads = largest long-range attention mass on the prompt, not the echo/induction probe",
      {{"retrieval_fraction", ParamType::Float, 0.15, 0.0, 1.0, {}, "share of (layer, KV head) pairs kept in full"}},
      64);
  t.check = check;
  t.make_policy = make;
  t.label = label;
  return t;
}

}  // namespace kvx
