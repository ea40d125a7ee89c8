#include "quantizers/kmeans.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <numeric>
#include <random>

#include "core/common/error.h"
#include "quantizers/attention_prune.h"

namespace kvx {

at::Tensor kmeans_update(at::Tensor& mu, at::Tensor& nu, const at::Tensor& keys, const at::Tensor& vals, double eta,
                         bool sequential) {
  const auto dt = mu.scalar_type();
  at::Tensor m = mu.to(at::kFloat), u = nu.to(at::kFloat);
  at::Tensor kf = keys.to(at::kFloat), vf = vals.to(at::kFloat);
  const int64_t K = m.size(2), n = kf.size(2);
  at::Tensor assign;
  if (!sequential) {
    // ||k - mu||^2 = ||k||^2 - 2 k.mu + ||mu||^2   [B, H, n, K]
    at::Tensor d = kf.pow(2).sum(-1, true) - 2 * at::matmul(kf, m.transpose(-1, -2)) +
                   m.pow(2).sum(-1).unsqueeze(2);
    assign = d.argmin(-1);                                   // [B, H, n]
    at::Tensor oh = at::one_hot(assign, K).to(at::kFloat);  // [B, H, n, K]
    at::Tensor cnt = oh.sum(2).unsqueeze(-1);                // [B, H, K, 1]
    at::Tensor has = cnt > 0;
    at::Tensor kmean = at::matmul(oh.transpose(-1, -2), kf) / cnt.clamp_min(1);
    at::Tensor vmean = at::matmul(oh.transpose(-1, -2), vf) / cnt.clamp_min(1);
    m = at::where(has, m * (1 - eta) + kmean * eta, m);
    u = at::where(has, u * (1 - eta) + vmean * eta, u);
  } else {
    std::vector<at::Tensor> cs;
    for (int64_t i = 0; i < n; ++i) {
      at::Tensor ki = kf.select(2, i).unsqueeze(2), vi = vf.select(2, i).unsqueeze(2);  // [B, H, 1, D]
      at::Tensor c = (m - ki).pow(2).sum(-1).argmin(-1);                                   // [B, H]
      at::Tensor oh = at::one_hot(c, K).to(at::kFloat).unsqueeze(-1);                      // [B, H, K, 1]
      m = m + oh * eta * (ki - m);
      u = u + oh * eta * (vi - u);
      cs.push_back(c);
    }
    assign = at::stack(cs, 2);
  }
  mu = m.to(dt).contiguous();
  nu = u.to(dt).contiguous();
  return assign;
}

std::vector<int64_t> kmeans_init_indices(int64_t n, int64_t K, uint64_t seed) {
  if (K > n) throw error("k-means init: need {} distinct entries, only {} kept", K, n);
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < K; ++i) {
    std::uniform_int_distribution<int64_t> pick(i, n - 1);
    std::swap(idx[size_t(i)], idx[size_t(pick(rng))]);
  }
  idx.resize(size_t(K));
  return idx;
}

namespace {
void check(const nlohmann::json& m) {
  attention_prune_check(m);
  const auto& p = m.at("policy");
  if (p.at("num_clusters").get<int64_t>() >= p.at("max_cache_size").get<int64_t>())
    throw ParamError({"policy", "num_clusters"},
                     fmt::format("kmeans_cluster: num_clusters ({}) must be < max_cache_size ({}) for clustering to "
                                 "be active (use attention_prune for pruning only)",
                                 p.at("num_clusters").get<int64_t>(), p.at("max_cache_size").get<int64_t>()));
}
}  // namespace

MethodTraits kmeans_cluster_traits() {
  MethodTraits t = attention_prune_traits();
  t.name = "kmeans_cluster";
  t.summary = "attention_prune with the online k-means summary required on (K < B): cache -> K centroids, key_pos -1";
  t.check = check;
  return t;
}

}  // namespace kvx
