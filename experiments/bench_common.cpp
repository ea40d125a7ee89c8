#include "experiments/bench_common.h"

#include <ATen/ATen.h>

namespace kvx::bench {

RandomWeights random_weights(const ModelShape& s, const at::TensorOptions& opt) {
  RandomWeights w;
  w.qkv = at::randn({s.hidden, (s.heads + 2 * s.kv_heads) * s.head_dim}, opt) * 0.02;
  w.o = at::randn({s.heads * s.head_dim, s.hidden}, opt) * 0.02;
  w.gate_up = at::randn({s.hidden, 2 * s.intermediate}, opt) * 0.02;
  w.down = at::randn({s.intermediate, s.hidden}, opt) * 0.02;
  w.lm_head = at::randn({s.hidden, s.vocab}, opt) * 0.02;
  w.norm = at::ones({s.hidden}, opt);
  return w;
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w) {
  return x * at::rsqrt(x.to(at::kFloat).pow(2).mean(-1, true) + 1e-5).to(x.scalar_type()) * w;
}

at::Tensor mlp(const at::Tensor& x, const RandomWeights& w, const ModelShape& s) {
  auto gu = at::matmul(x, w.gate_up);
  const int64_t last = gu.dim() - 1;
  return at::matmul(at::silu(gu.narrow(last, 0, s.intermediate)) * gu.narrow(last, s.intermediate, s.intermediate), w.down);
}

void sync(const at::Device& d) {
  if (d.is_cuda()) at::zeros({1}, at::TensorOptions().device(d)).item<float>();
}

}  // namespace kvx::bench
