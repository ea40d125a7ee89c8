#include "quantizers/zack.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "core/cache/token_codec.h"
#include "core/common/error.h"
#include "quantizers/selective_int8.h"

namespace kvx {
namespace {

// [B, H, n, D] -> per-head basis [H, D, r] (top right singular vectors, uncentered)
at::Tensor fit_basis(const at::Tensor& x, int64_t r) {
  const int64_t B = x.size(0), H = x.size(1), n = x.size(2), D = x.size(3);
  at::Tensor rows = x.to(at::kFloat).permute({1, 0, 2, 3}).reshape({H, B * n, D});
  // right singular vectors = eigenvectors of XᵀX, largest first
  at::Tensor gram = at::matmul(rows.transpose(1, 2), rows);  // [H, D, D]
  at::Tensor vecs = std::get<1>(at::linalg_eigh(gram));      // ascending eigenvalues
  return vecs.flip(-1).narrow(-1, 0, r).contiguous();        // [H, D, r]
}

class ZackPolicy final : public KVCachePolicy {
 public:
  ZackPolicy(double f, int64_t fit) : f_(f), fit_(fit) {
    if (!(f_ > 0 && f_ <= 1) || fit_ < 1) throw error("zack: need 0 < rank_fraction <= 1 and fit_tokens >= 1");
  }

  void reset(const ModelInfo& m, int64_t batch) override {
    layers_.assign(size_t(m.n_layers), Layer{});
    seen_ = 0;
    r_ = std::max<int64_t>(1, int64_t(std::nearbyint(f_ * double(m.head_dim))));
    r_ = std::min(r_, m.head_dim);
  }

  AttnInputs update(int layer, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s) override {
    if (layer < 0 || layer >= int(layers_.size())) throw error("zack: layer {} out of range (reset() first?)", layer);
    if (s.pos0 != seen_) throw error("zack: layer {} got a chunk at position {} after {} tokens", layer, s.pos0, seen_);
    Layer& L = layers_[size_t(layer)];
    const int64_t n = k_new.size(2);
    AttnInputs out;
    at::Tensor ck, cv;  // cached entries as attention sees them
    if (L.pk.defined()) {
      ck = L.ck.defined() ? at::matmul(L.ck.to(at::kFloat), L.pk.transpose(1, 2)).to(k_new.scalar_type()) : at::Tensor();
      cv = L.cv.defined() ? at::matmul(L.cv.to(at::kFloat), L.pv.transpose(1, 2)).to(v_new.scalar_type()) : at::Tensor();
    } else {
      ck = L.k;
      cv = L.v;
    }
    out.k = ck.defined() ? at::cat({ck, k_new}, 2) : k_new;
    out.v = cv.defined() ? at::cat({cv, v_new}, 2) : v_new;
    out.key_pos = at::arange(0, s.pos0 + n, at::TensorOptions().dtype(at::kLong).device(k_new.device()));
    out.n_cached = s.pos0;
    // store the chunk (compressed after its own attention)
    if (L.pk.defined()) {
      at::Tensor a = at::matmul(k_new.to(at::kFloat), L.pk).to(k_new.scalar_type());
      at::Tensor b = at::matmul(v_new.to(at::kFloat), L.pv).to(v_new.scalar_type());
      L.ck = L.ck.defined() ? at::cat({L.ck, a}, 2) : a;
      L.cv = L.cv.defined() ? at::cat({L.cv, b}, 2) : b;
    } else {
      L.k = L.k.defined() ? at::cat({L.k, k_new}, 2) : k_new.clone();
      L.v = L.v.defined() ? at::cat({L.v, v_new}, 2) : v_new.clone();
    }
    return out;
  }

  void end_step(const StepInfo& s) override {
    seen_ = s.pos0 + s.n_new;
    if (seen_ < fit_) return;
    for (auto& L : layers_) {
      if (L.pk.defined() || !L.k.defined()) continue;
      L.pk = fit_basis(L.k, r_);  // [H, D, r] fp32
      L.pv = fit_basis(L.v, r_);
      L.ck = at::matmul(L.k.to(at::kFloat), L.pk).to(L.k.scalar_type()).contiguous();
      L.cv = at::matmul(L.v.to(at::kFloat), L.pv).to(L.v.scalar_type()).contiguous();
      L.k = at::Tensor();
      L.v = at::Tensor();
    }
  }

  MemoryReport memory() const override {
    SegmentTally t;
    for (const auto& L : layers_) {
      t.add("k.full", L.k.defined() ? L.k.numel() : 0, fp_bits(L.k));
      t.add("v.full", L.v.defined() ? L.v.numel() : 0, fp_bits(L.v));
      t.add("k.coeffs", L.ck.defined() ? L.ck.numel() : 0, fp_bits(L.ck));
      t.add("v.coeffs", L.cv.defined() ? L.cv.numel() : 0, fp_bits(L.cv));
      t.add("k.basis", L.pk.defined() ? L.pk.numel() : 0, fp_bits(L.pk));
      t.add("v.basis", L.pv.defined() ? L.pv.numel() : 0, fp_bits(L.pv));
    }
    MemoryReport r;
    t.to_report(r);
    r.tokens_seen = seen_;
    r.tokens_kept = seen_;  // no token is dropped; each is stored in r dimensions
    return r;
  }

  std::string name() const override { return "zack"; }

 private:
  struct Layer {
    at::Tensor k, v;    // before the fit: full [B, H, n, D]
    at::Tensor pk, pv;  // bases [H, D, r] (fp32 math, counted at 16 bits)
    at::Tensor ck, cv;  // coefficients [B, H, n, r]
  };
  double f_;
  int64_t fit_, r_ = 1;
  std::vector<Layer> layers_;
  int64_t seen_ = 0;
};

void check(const nlohmann::json& m) { require_no_codecs(m, "zack"); }

std::unique_ptr<KVCachePolicy> make(const nlohmann::json& m) {
  return make_zack_policy(m.at("policy").at("rank_fraction").get<double>(), m.at("policy").at("fit_tokens").get<int64_t>());
}

std::string label(const nlohmann::json& m) {
  return fmt::format("zack r{:g} fit{}", m["policy"]["rank_fraction"].get<double>(), m["policy"]["fit_tokens"].get<int64_t>());
}

}  // namespace

std::unique_ptr<KVCachePolicy> make_zack_policy(double f, int64_t fit) { return std::make_unique<ZackPolicy>(f, fit); }

MethodTraits zack_traits() {
  MethodTraits t;
  t.name = "zack";
  t.kind = ComponentKind::Policy;
  t.summary = "ZACK: K/V projected on a per layer/head SVD basis of rank f·D (coefficients + basis stored); "
              "simplification: basis fitted on the sequence's first fit_tokens, one rank for all heads, "
              "attention via reconstruction (equal to reduced-space attention)";
  t.params = {
      {"rank_fraction", ParamType::Float, 0.5, 1e-6, 1.0, {}, "kept dimensions r = round(f·head_dim)"},
      {"fit_tokens", ParamType::Int, 128, 1, 1 << 30, {}, "prompt tokens the basis is fitted on"},
  };
  t.bits = "16·r/D";
  t.check = check;
  t.make_policy = make;
  t.label = label;
  return t;
}

}  // namespace kvx
