// QaqPolicy: per-token QAQ quantization of keys and values on the cache-policy interface
// (docs/methods/qaq.md; contract and storage in quantizers/qaq.h).
//
// Host state per role and layer: the full-precision copy `fp` (what re-quantization reads; counted
// as offload) and the dequantized working view `deq` (what attention reads; not counted), both
// CPU fp32 [B, Hkv, cap, D]. Each group keeps its real storage: packed codes, fp16 centre/scale,
// width, outlier indices and fp16 values.
#include <ATen/ATen.h>
#include <c10/util/Half.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/common/error.h"
#include "quantizers/qaq.h"

namespace kvx {

namespace {
struct Group {
  int8_t bits = -1;  // -1: not quantized yet (kept full precision)
  bool has_stats = false;
  qaq::GroupStats st;
  c10::Half center{0.f}, scale{0.f};
  std::vector<c10::Half> outlier_values;
  std::vector<uint8_t> packed;
};

int ceil_log2(int64_t m) {
  int k = 0;
  while ((int64_t(1) << k) < m) ++k;
  return k;
}
}  // namespace

struct QaqPolicy::Impl {
  struct Role {
    QaqRoleConfig cfg;
    int64_t M = 0;                           // values per group
    std::vector<std::vector<Group>> groups;  // [scope][token]
    std::vector<at::Tensor> fp, deq;         // per layer, CPU fp32 [B, Hkv, cap, D]
  };

  QaqSchedule schedule;
  ModelInfo info;
  int64_t B = 1;
  Role roles[2];  // 0 = keys, 1 = values
  std::vector<int64_t> len;
  int64_t cap = 0;
  int next_layer = 0;
  std::vector<at::Tensor> ring;  // per layer: last W query rows [B, Hq, w, N], CPU fp32
  std::vector<char> seen_attn;
  bool one_shot_done = false;
  // q_norm: auto (docs/methods/qaq.md): ‖q/√D‖² of every query the model handed over in this sequence
  // until the first key quantization; the 90th percentile of these is then fixed for the sequence.
  std::vector<float> q_sq;
  double q_norm_calibrated = 0;
  int64_t requantized = 0;

  int64_t n_scopes(const Role& r) const {
    switch (r.cfg.level) {
      case QaqLevel::Head: return info.n_layers * B * info.n_kv_heads;
      case QaqLevel::Layer: return info.n_layers * B;
      case QaqLevel::Token: return B;
    }
    return 0;
  }
  int64_t scope_of(const Role& r, int64_t l, int64_t b, int64_t h) const {
    switch (r.cfg.level) {
      case QaqLevel::Head: return (l * B + b) * info.n_kv_heads + h;
      case QaqLevel::Layer: return l * B + b;
      case QaqLevel::Token: return b;
    }
    return 0;
  }
  // Calls f(fp_ptr, deq_ptr, offset_in_group) for each D-run of a group, in head-major order
  // (layer-major for level token), head-major as in docs/methods/aqua_kv.md.
  template <typename F>
  void for_runs(Role& r, int64_t scope, int64_t t, F f) {
    const int64_t H = info.n_kv_heads, D = info.head_dim;
    int64_t l0, l1, b, h0, h1;
    switch (r.cfg.level) {
      case QaqLevel::Head: h0 = scope % H; h1 = h0 + 1; b = (scope / H) % B; l0 = scope / H / B; l1 = l0 + 1; break;
      case QaqLevel::Layer: h0 = 0; h1 = H; b = scope % B; l0 = scope / B; l1 = l0 + 1; break;
      default: h0 = 0; h1 = H; b = scope; l0 = 0; l1 = info.n_layers; break;
    }
    int64_t off = 0;
    for (int64_t l = l0; l < l1; ++l) {
      float* fp = r.fp[l].data_ptr<float>();
      float* dq = r.deq[l].data_ptr<float>();
      for (int64_t h = h0; h < h1; ++h, off += D) {
        const int64_t base = ((b * H + h) * cap + t) * D;
        f(fp + base, dq + base, off);
      }
    }
  }

  void grow(int64_t need) {
    if (need <= cap) return;
    const int64_t new_cap = std::max<int64_t>({64, 2 * cap, need});
    for (auto& r : roles)
      for (auto* v : {&r.fp, &r.deq})
        for (auto& t : *v) {
          auto n = at::zeros({B, info.n_kv_heads, new_cap, info.head_dim}, at::kFloat);
          if (t.defined() && cap > 0) n.narrow(2, 0, cap).copy_(t);
          t = n;
        }
    cap = new_cap;
  }

  // (Re)quantizes one group to `bits` from the fp copy and refreshes its dequantized view.
  void quantize(Role& r, int64_t scope, int64_t t, int bits, std::vector<float>& x, std::vector<float>& y,
                std::vector<uint8_t>& codes) {
    Group& g = r.groups[scope][t];
    if (g.bits == bits) return;
    for_runs(r, scope, t, [&](const float* fp, float*, int64_t off) {
      std::copy(fp, fp + info.head_dim, x.begin() + off);
    });
    ensure_stats(r, g, x);
    const float scale = qaq::group_scale(g.st, bits, r.cfg.group);
    qaq::quantize_group(x.data(), r.M, g.st, bits, g.st.center, scale, r.cfg.group, codes);
    qaq::pack_any(codes.data(), int64_t(codes.size()), bits, g.packed);
    g.center = c10::Half(g.st.center);
    g.scale = c10::Half(scale);
    g.bits = int8_t(bits);
    // Decode from what is stored: packed codes, 16-bit stats, fp16 outliers.
    qaq::unpack_any(g.packed.data(), int64_t(codes.size()), bits, codes.data());
    std::vector<float> ov(g.outlier_values.begin(), g.outlier_values.end());
    qaq::dequantize_group(codes.data(), g.st, bits, float(g.center), float(g.scale), ov.data(), r.M, r.cfg.group,
                          y.data());
    for_runs(r, scope, t, [&](const float*, float* dq, int64_t off) {
      std::copy(y.begin() + off, y.begin() + off + info.head_dim, dq);
    });
    ++requantized;
  }

  void ensure_stats(Role& r, Group& g, const std::vector<float>& x) {
    if (g.has_stats) return;
    g.st = qaq::group_stats(x.data(), r.M, r.cfg.group);
    g.outlier_values.clear();
    for (int32_t i : g.st.outliers) g.outlier_values.push_back(c10::Half(x[i]));
    g.has_stats = true;
  }

  // a_t per scope: [scope][t] maxima of the last W query rows over the heads/layers covered.
  std::vector<std::vector<float>> attention_maxima(const Role& r, int64_t T) {
    const int64_t H = info.n_kv_heads, G = info.n_heads / info.n_kv_heads;
    std::vector<at::Tensor> per_layer;  // [B, Hkv, T] (head) or [B, 1, T]
    for (int64_t l = 0; l < info.n_layers; ++l) {
      if (!seen_attn[l] || !ring[l].defined())
        throw error("qaq: the value rule needs attention probabilities, but layer {} received none in this "
                    "step (the model's attention path must be 'matmul'; set use_attentions: false to run "
                    "without them)", l);
      if (ring[l].size(3) != T)
        throw error("qaq: layer {} attention covers {} entries, the cache holds {}", l, ring[l].size(3), T);
      auto a = std::get<0>(ring[l].max(2));  // [B, Hq, T]
      a = std::get<0>(a.view({B, H, G, T}).max(2));  // GQA: max over sharing query heads
      if (r.cfg.level != QaqLevel::Head) a = std::get<0>(a.max(1, true));
      per_layer.push_back(a.contiguous());
    }
    if (r.cfg.level == QaqLevel::Token) {
      auto m = per_layer[0];
      for (size_t l = 1; l < per_layer.size(); ++l) m = at::maximum(m, per_layer[l]);
      per_layer = {m.contiguous()};
    }
    std::vector<std::vector<float>> out(n_scopes(r), std::vector<float>(T));
    for (int64_t s = 0; s < n_scopes(r); ++s) {
      int64_t l, b, h;
      if (r.cfg.level == QaqLevel::Head) { h = s % H; b = (s / H) % B; l = s / H / B; }
      else if (r.cfg.level == QaqLevel::Layer) { h = 0; b = s % B; l = s / B; }
      else { h = 0; b = s; l = 0; }
      const auto& a = per_layer[l];
      const float* p = a.data_ptr<float>() + (b * a.size(1) + h) * T;
      std::copy(p, p + T, out[s].begin());
    }
    return out;
  }

  // 90th percentile (linear interpolation between order statistics, numpy's default) of the
  // squared query norms collected so far.
  void calibrate_q_norm() {
    if (q_sq.empty())
      throw error("qaq: key q_norm is 'auto' but the model handed over no queries before the first key "
                  "quantization; give q_norm a number (upstream: 300)");
    const double pos = 0.9 * double(q_sq.size() - 1);
    const size_t lo = size_t(pos);
    std::nth_element(q_sq.begin(), q_sq.begin() + long(lo), q_sq.end());
    const double a = q_sq[lo];
    const double b = lo + 1 < q_sq.size() ? *std::min_element(q_sq.begin() + long(lo) + 1, q_sq.end()) : a;
    q_norm_calibrated = a + (pos - double(lo)) * (b - a);
    q_sq.clear();
    q_sq.shrink_to_fit();
  }

  void step_role(Role& r, int64_t T) {
    const auto& c = r.cfg;
    for (auto& v : r.groups) v.resize(T);
    std::vector<float> x(r.M), y(r.M);
    std::vector<uint8_t> codes;
    if (!c.use_attentions) {
      for (int64_t s = 0; s < int64_t(r.groups.size()); ++s)
        for (int64_t t = 0; t < T; ++t) quantize(r, s, t, c.n_bits_uniform, x, y, codes);
      return;
    }
    if (T <= 1) return;  // T <= 1 guard: keep full precision
    double e_key = 0;
    if (c.is_key) {
      if (c.q_norm <= 0 && q_norm_calibrated <= 0) calibrate_q_norm();
      e_key = qaq::key_tolerance(T, c.target_quantization_error, c.q_norm > 0 ? c.q_norm : q_norm_calibrated);
    }
    std::vector<std::vector<float>> attn;
    if (!c.is_key) attn = attention_maxima(r, T);
    const int64_t recent_from = T - (c.last_n_attentions - 1);
    for (int64_t s = 0; s < int64_t(r.groups.size()); ++s) {
      for (int64_t t = 0; t < T; ++t) {
        int bits = c.n_bits_max;
        if (t < recent_from) {
          Group& g = r.groups[s][t];
          if (!g.has_stats) {
            for_runs(r, s, t, [&](const float* fp, float*, int64_t off) {
              std::copy(fp, fp + info.head_dim, x.begin() + off);
            });
            ensure_stats(r, g, x);
          }
          const double e = c.is_key ? e_key : qaq::value_tolerance(T, c.target_quantization_error, attn[s][t]);
          bits = qaq::bits_for(g.st.range, e, c.bits_formula, c.n_bits_min, c.n_bits_max);
        }
        quantize(r, s, t, bits, x, y, codes);
      }
    }
  }
};

QaqPolicy::QaqPolicy(QaqRoleConfig key, QaqRoleConfig value, QaqSchedule schedule) : impl_(new Impl) {
  key.is_key = true;
  value.is_key = false;
  impl_->roles[0].cfg = key;
  impl_->roles[1].cfg = value;
  impl_->schedule = schedule;
}
QaqPolicy::~QaqPolicy() = default;

void QaqPolicy::reset(const ModelInfo& m, int64_t batch) {
  auto& I = *impl_;
  if (m.n_kv_heads <= 0 || m.n_heads % m.n_kv_heads != 0)
    throw error("qaq: {} query heads cannot be grouped over {} KV heads", m.n_heads, m.n_kv_heads);
  I.info = m;
  I.B = batch;
  I.len.assign(m.n_layers, 0);
  I.cap = 0;
  I.next_layer = 0;
  I.ring.assign(m.n_layers, at::Tensor());
  I.seen_attn.assign(m.n_layers, 0);
  I.one_shot_done = false;
  I.requantized = 0;
  I.q_sq.clear();
  I.q_norm_calibrated = 0;
  for (auto& r : I.roles) {
    r.M = m.head_dim * (r.cfg.level == QaqLevel::Head ? 1 : m.n_kv_heads) *
          (r.cfg.level == QaqLevel::Token ? m.n_layers : 1);
    r.groups.assign(I.n_scopes(r), {});
    r.fp.assign(m.n_layers, at::Tensor());
    r.deq.assign(m.n_layers, at::Tensor());
  }
}

AttnInputs QaqPolicy::update(int layer, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s) {
  auto& I = *impl_;
  if (layer != I.next_layer)
    throw error("qaq: layers must be updated in order 0..{} each step; got layer {} after {}", I.info.n_layers - 1,
                layer, I.next_layer - 1);
  I.next_layer = layer + 1;
  const int64_t n = k_new.size(2);
  const int64_t n_cached = I.len[layer];
  I.grow(n_cached + n);
  for (int role = 0; role < 2; ++role) {
    auto x = (role == 0 ? k_new : v_new).to(at::kCPU, at::kFloat);
    auto& r = I.roles[role];
    r.fp[layer].narrow(2, n_cached, n).copy_(x);
    r.deq[layer].narrow(2, n_cached, n).copy_(x);
  }
  I.len[layer] = n_cached + n;
  AttnInputs out;
  auto join = [&](const at::Tensor& deq, const at::Tensor& fresh) {
    if (n_cached == 0) return fresh;
    return at::cat({deq.narrow(2, 0, n_cached).to(fresh.device(), fresh.scalar_type()), fresh}, 2);
  };
  out.k = join(I.roles[0].deq[layer], k_new);
  out.v = join(I.roles[1].deq[layer], v_new);
  out.key_pos = at::arange(s.pos0 - n_cached, s.pos0 + n, at::TensorOptions().dtype(at::kLong).device(k_new.device()));
  out.n_cached = n_cached;
  return out;
}

bool QaqPolicy::wants_queries() const {
  const auto& k = impl_->roles[0].cfg;
  return k.enabled && k.use_attentions && k.q_norm <= 0 && impl_->q_norm_calibrated <= 0;
}

void QaqPolicy::observe_queries(int, const at::Tensor& q, const StepInfo&) {
  if (!wants_queries()) return;
  auto n = (q.to(at::kFloat).pow(2).sum(-1) / double(q.size(-1))).reshape({-1}).to(at::kCPU).contiguous();
  impl_->q_sq.insert(impl_->q_sq.end(), n.data_ptr<float>(), n.data_ptr<float>() + n.numel());
}

bool QaqPolicy::wants_attention() const {
  const auto& v = impl_->roles[1].cfg;
  return v.enabled && v.use_attentions && !(impl_->schedule == QaqSchedule::OneShot && impl_->one_shot_done);
}

void QaqPolicy::observe_attention(int layer, const at::Tensor& probs, const StepInfo&) {
  auto& I = *impl_;
  if (!wants_attention()) return;
  const int64_t W = I.roles[1].cfg.last_n_attentions;
  const int64_t n = probs.size(2), N = probs.size(3);
  auto rows = probs.narrow(2, n - std::min(n, W), std::min(n, W)).to(at::kCPU, at::kFloat);
  auto& ring = I.ring.at(layer);
  if (ring.defined()) {
    auto old = at::constant_pad_nd(ring, {0, N - ring.size(3)});
    rows = at::cat({old, rows}, 2);
    if (rows.size(2) > W) rows = rows.narrow(2, rows.size(2) - W, W);
  }
  ring = rows.contiguous();
  I.seen_attn[layer] = 1;
}

void QaqPolicy::end_step(const StepInfo&) {
  auto& I = *impl_;
  if (I.next_layer != I.info.n_layers)
    throw error("qaq: end_step after {} of {} layers", I.next_layer, I.info.n_layers);
  I.next_layer = 0;
  const int64_t T = I.len[0];
  if (!(I.schedule == QaqSchedule::OneShot && I.one_shot_done)) {
    for (auto& r : I.roles)
      if (r.cfg.enabled) I.step_role(r, T);
    I.one_shot_done = true;
  }
  std::fill(I.seen_attn.begin(), I.seen_attn.end(), 0);
}

MemoryReport QaqPolicy::memory() const {
  const auto& I = *impl_;
  MemoryReport rep;
  const int64_t T = I.len.empty() ? 0 : I.len[0];
  const int64_t per_role = I.info.n_layers * I.B * I.info.n_kv_heads * I.info.head_dim * T;
  for (int role = 0; role < 2; ++role) {
    const auto& r = I.roles[role];
    const std::string p = role == 0 ? "k" : "v";
    if (!r.cfg.enabled) {
      rep.segments.push_back({p + ".fp", per_role, per_role * 16, MemorySegment::kDevice});
      continue;
    }
    const int n_stats = r.cfg.group.symmetric ? 1 : 2;
    const int idx_bits = ceil_log2(r.M);
    int64_t fp_e = 0, code_e = 0, code_b = 0, groups = 0, outl = 0;
    for (const auto& scope : r.groups)
      for (size_t t = 0; t < scope.size() && int64_t(t) < T; ++t) {
        const Group& g = scope[t];
        if (g.bits < 0) {
          fp_e += r.M;
          continue;
        }
        ++groups;
        code_e += g.st.inliers;
        code_b += int64_t(g.packed.size()) * 8;
        outl += int64_t(g.st.outliers.size());
      }
    // Tokens the schedule never reached (one_shot tail) are full precision.
    const int64_t reached = r.groups.empty() ? 0 : int64_t(r.groups[0].size());
    if (T > reached) fp_e += (T - reached) * r.M * int64_t(r.groups.size());
    rep.segments.push_back({p + ".codes", code_e, code_b, MemorySegment::kDevice});
    rep.segments.push_back({p + ".stats", groups * n_stats, groups * n_stats * 16, MemorySegment::kDevice});
    rep.segments.push_back({p + ".widths", groups, groups * 8, MemorySegment::kDevice});
    rep.segments.push_back({p + ".outliers", outl, outl * (16 + idx_bits), MemorySegment::kDevice});
    rep.segments.push_back({p + ".fp", fp_e, fp_e * 16, MemorySegment::kDevice});
    rep.segments.push_back({p + ".host_copy", per_role, per_role * 16, MemorySegment::kOffload});
  }
  rep.tokens_seen = T;
  rep.tokens_kept = T;
  return rep;
}

double QaqPolicy::key_q_norm() const {
  const auto& k = impl_->roles[0].cfg;
  if (!k.enabled || !k.use_attentions) return std::nan("");
  return k.q_norm > 0 ? k.q_norm : impl_->q_norm_calibrated > 0 ? impl_->q_norm_calibrated : std::nan("");
}

double QaqPolicy::paper_bpv() const {
  const auto& I = *impl_;
  const int64_t T = I.len.empty() ? 0 : I.len[0];
  const int64_t per_role = I.info.n_layers * I.B * I.info.n_kv_heads * I.info.head_dim * T;
  if (per_role == 0) return std::nan("");
  double bits = 0;
  for (const auto& r : I.roles) {
    if (!r.cfg.enabled) {
      bits += 16.0 * per_role;
      continue;
    }
    const double ratio = r.cfg.group.outliers_ratio;
    const int n_extra = r.cfg.group.symmetric ? 1 : 2;
    int64_t counted = 0;
    for (const auto& scope : r.groups)
      for (size_t t = 0; t < scope.size() && int64_t(t) < T; ++t) {
        const Group& g = scope[t];
        counted += r.M;
        bits += g.bits < 0 ? 16.0 * r.M : g.bits * (1 - ratio) * r.M + 16.0 * ratio * r.M + 16.0 * n_extra;
      }
    bits += 16.0 * (per_role - counted);
  }
  return bits / (2.0 * per_role);
}

int QaqPolicy::group_bits(bool key, int layer, int64_t b, int64_t h, int64_t t) const {
  const auto& I = *impl_;
  const auto& r = I.roles[key ? 0 : 1];
  const int64_t s = I.scope_of(r, layer, b, h);
  if (s >= int64_t(r.groups.size()) || t >= int64_t(r.groups[s].size())) return -1;
  return r.groups[s][t].bits;
}

double QaqPolicy::mean_bits(bool key) const {
  const auto& r = impl_->roles[key ? 0 : 1];
  double sum = 0;
  int64_t n = 0;
  for (const auto& scope : r.groups)
    for (const auto& g : scope)
      if (g.bits >= 0) sum += g.bits, ++n;
  return n ? sum / n : std::nan("");
}

int64_t QaqPolicy::requantized_groups() const { return impl_->requantized; }

}  // namespace kvx
