#include "quantizers/uncomp.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "quantizers/selective_int8.h"

namespace kvx {

double matrix_entropy(const at::Tensor& keys, int64_t rank) {
  // On the host: the eigenvalues are read through a raw pointer below (keys may live on a GPU).
  at::Tensor k = keys.to(at::kCPU, at::kDouble).reshape({-1, keys.size(-1)});
  at::Tensor cov = at::matmul(k.t(), k) / double(k.size(0));
  at::Tensor ev = std::get<0>(at::linalg_eigh(cov)).clamp_min(0).flip(0).contiguous();  // descending
  if (rank > 0 && rank < ev.size(0)) ev = ev.narrow(0, 0, rank);
  const double tot = ev.sum().item<double>();
  if (tot <= 0) return 0.0;
  double h = 0;
  const double* p = ev.data_ptr<double>();
  for (int64_t i = 0; i < ev.size(0); ++i) {
    const double q = p[i] / tot;
    if (q > 0) h -= q * std::log(q);
  }
  return h;
}

BudgetRule uncomp_rule(int64_t budget, int64_t rank) {
  return [budget, rank](const BudgetStats& st) {
    const size_t L = st.keys.size(), H = L ? st.keys[0].size() : 0;
    std::vector<std::vector<double>> er(L, std::vector<double>(H));
    double tot = 0;
    for (size_t l = 0; l < L; ++l)
      for (size_t h = 0; h < H; ++h) tot += er[l][h] = std::exp(matrix_entropy(st.keys[l][h], rank));
    std::vector<std::vector<int64_t>> b(L, std::vector<int64_t>(H));
    for (size_t l = 0; l < L; ++l)
      for (size_t h = 0; h < H; ++h)
        b[l][h] = int64_t(std::nearbyint(double(budget) * double(L * H) * er[l][h] / tot));
    return b;
  };
}

namespace {
void check(const nlohmann::json& m) { require_no_codecs(m, "uncomp"); }

std::unique_ptr<KVCachePolicy> make(const nlohmann::json& m) {
  const auto& p = m.at("policy");
  HeadBudgetConfig c = head_budget_config("uncomp", p);
  c.decide = uncomp_rule(p.at("budget").get<int64_t>(), p.at("rank").get<int64_t>());
  return make_head_budget_policy(std::move(c));
}

std::string label(const nlohmann::json& m) {
  const auto& p = m["policy"];
  return head_budget_label(fmt::format("uncomp b{}", p["budget"].get<int64_t>()), m);
}
}  // namespace

MethodTraits uncomp_traits() {
  MethodTraits t = head_budget_traits("uncomp",
      "UNComp: per layer/KV-head budgets ∝ exp(matrix entropy of prompt keys), tokens by window attention; "
      "simplification: proportional budgets (no discrete groups), keys only (no hidden-state compression)",
      {{"budget", ParamType::Int, 128, 1, 1 << 30, {}, "mean entries kept per layer and KV head"},
       {"rank", ParamType::Int, 0, 0, 1 << 30, {}, "eigenvalues kept for the truncated entropy (0 = all)"}},
      32);
  t.check = check;
  t.make_policy = make;
  t.label = label;
  return t;
}

}  // namespace kvx
