#include "core/cache/dense_attention.h"

#include <ATen/ATen.h>
#include <torch/version.h>

#include <cmath>

#include "core/common/error.h"

namespace kvx {
namespace {

std::string sizes_str(const at::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

// allowed[t, i]: may the query at absolute position pos0 + t use entry i? With per-head
// positions (AttnInputs::head_pos) the result is allowed[h, t, i] per KV head.
at::Tensor visibility(const AttnInputs& a, int64_t pos0, int64_t T, const AttentionOptions& opt) {
  const bool per_head = a.head_pos.defined();
  auto kp = per_head ? a.head_pos.to(at::kLong).unsqueeze(1)                               // [Hkv, 1, N]
                     : a.key_pos.to(at::kLong).unsqueeze(0);                               // [1, N]
  auto qp = at::arange(pos0, pos0 + T, a.key_pos.options().dtype(at::kLong)).unsqueeze(1);  // [T, 1]
  at::Tensor ok = kp <= qp;
  if (a.window >= 0) ok = ok.logical_and((kp < a.sink).logical_or((qp - kp) < a.window));
  if (opt.model_window > 0) ok = ok.logical_and((qp - kp) < opt.model_window);
  ok = ok.logical_or(kp == -1);  // summaries are visible to every query
  if (per_head) ok = ok.logical_and(kp >= -1);  // -2: empty padding slot of a shorter head
  return ok;
}

}  // namespace

void check_attn_inputs(const AttnInputs& a, const at::Tensor& q, int64_t Hkv, int layer, const std::string& policy) {
  const int64_t B = q.size(0), D = q.size(3);
  if (!a.k.defined() || a.k.dim() != 4 || a.k.size(0) != B || a.k.size(1) != Hkv || a.k.size(3) != D ||
      !a.v.defined() || !a.v.sizes().equals(a.k.sizes()) || !a.key_pos.defined() || a.key_pos.dim() != 1 ||
      a.key_pos.size(0) != a.k.size(2))
    throw error("cache policy '{}' returned malformed attention inputs at layer {}: expected k, v "
                "[{}, {}, N, {}] and key_pos [N], got k {}, v {}, key_pos {}", policy, layer, B, Hkv, D,
                sizes_str(a.k), sizes_str(a.v), sizes_str(a.key_pos));
  if (a.head_pos.defined() && (a.head_pos.dim() != 2 || a.head_pos.size(0) != Hkv || a.head_pos.size(1) != a.k.size(2)))
    throw error("cache policy '{}' returned head_pos {} at layer {}, expected [{}, {}]", policy,
                sizes_str(a.head_pos), layer, Hkv, a.k.size(2));
}

at::Tensor dense_attention(const at::Tensor& q, const AttnInputs& a, int layer, const StepInfo& step,
                           const AttentionOptions& opt, KVCachePolicy* observer, std::string& impl) {
  const int64_t B = q.size(0), Hq = q.size(1), T = q.size(2), D = q.size(3);
  const int64_t Hkv = a.k.size(1);
  const int64_t G = Hq / Hkv;
  const bool want_probs = observer && observer->wants_attention();
  const int64_t N = a.k.size(2);
  at::Tensor k = a.k.to(q.scalar_type()), v = a.v.to(q.scalar_type());
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
  // No mask needed, so SDPA runs a flash kernel with the GQA grouping inside: nothing cached and no
  // window (plain causal attention over the chunk), or a decode step over entries at earlier
  // positions (none evicted per head, no window cutting them: every entry is visible).
  const bool plain_causal = a.n_cached == 0 && N == T && !a.head_pos.defined() && a.window < 0 &&
                            (opt.model_window <= 0 || opt.model_window >= T);
  const bool all_visible = T == 1 && !a.head_pos.defined() && a.window < 0 && opt.model_window <= 0;
  if (q.is_cuda() && !want_probs && (plain_causal || all_visible)) {
    impl = "sdpa";
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/plain_causal, opt.scale, /*enable_gqa=*/true)
        .transpose(1, 2)
        .reshape({B, T, Hq * D});
  }
#endif
  at::Tensor allowed = visibility(a, step.pos0, T, opt);  // [T, N], or [Hkv, T, N] with head_pos
  // Query head h = kv*G + g; folding g into the token axis lets one matmul serve the group.
  at::Tensor qg = q.reshape({B, Hkv, G * T, D});
  at::Tensor out;  // [B, Hkv, G*T, D]

#if TORCH_VERSION_MAJOR >= 2
  if (q.is_cuda() && !want_probs) {
    const double def_scale = 1.0 / std::sqrt(double(D));
    at::Tensor qs = std::abs(opt.scale - def_scale) > 1e-12 ? qg * (opt.scale / def_scale) : qg;
    at::Tensor mask = allowed.dim() == 3 ? allowed.unsqueeze(1).expand({Hkv, G, T, N}).reshape({Hkv, G * T, N})
                                         : allowed.repeat({G, 1});  // [G*T, N]: row g*T + t
    out = at::scaled_dot_product_attention(qs, k, v, mask);
    impl = "sdpa";
    return out.reshape({B, Hq, T, D}).transpose(1, 2).reshape({B, T, Hq * D});
  }
#endif
  at::Tensor scores = at::matmul(qg, k.transpose(-1, -2)).to(at::kFloat).mul_(opt.scale);  // [B,Hkv,G*T,N]
  scores = scores.view({B, Hkv, G, T, N});
  scores.masked_fill_((allowed.dim() == 3 ? allowed.unsqueeze(1) : allowed).logical_not(),
                      -std::numeric_limits<float>::infinity());
  at::Tensor probs = at::softmax(scores, -1);
  if (want_probs) observer->observe_attention(layer, probs.detach().view({B, Hq, T, N}), step);  // selection is not trained
  out = at::matmul(probs.view({B, Hkv, G * T, N}).to(q.scalar_type()), v);
  impl = "matmul";
  return out.view({B, Hq, T, D}).transpose(1, 2).reshape({B, T, Hq * D});
}

}  // namespace kvx
