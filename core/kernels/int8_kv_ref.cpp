// Plain CPU reference of int8_kv.h's decode attention (ATen matmuls written for clarity, the
// yardstick the CUDA kernel is tested against) and the dispatching public functions.
#include <ATen/ATen.h>

#include <vector>

#include "core/common/error.h"
#include "core/kernels/int8_kv.h"
#include "core/kernels/packed_kv.h"

namespace kvx::kernels {

namespace {
bool has_tokens(const at::Tensor& t) { return t.defined() && t.size(2) > 0; }
}  // namespace

int64_t SelectiveInt8Cache::bytes() const {
  int64_t n = 0;
  for (const at::Tensor* t : {&k_sink, &v_sink, &k_body.codes, &k_body.scale, &v_body.codes, &v_body.scale, &k_win, &v_win})
    n += tensor_bytes(*t);
  return n;
}

namespace ref {

at::Tensor int8_decode_attention(const at::Tensor& q, const SelectiveInt8Cache& c, double scale) {
  std::vector<at::Tensor> ks, vs;
  if (has_tokens(c.k_sink)) {
    ks.push_back(c.k_sink.to(at::kCPU, at::kFloat));
    vs.push_back(c.v_sink.to(at::kCPU, at::kFloat));
  }
  if (c.k_body.tokens() > 0) {
    ks.push_back(kvx::int8_dequantize(c.k_body, at::kFloat).to(at::kCPU));
    vs.push_back(kvx::int8_dequantize(c.v_body, at::kFloat).to(at::kCPU));
  }
  if (has_tokens(c.k_win)) {
    ks.push_back(c.k_win.to(at::kCPU, at::kFloat));
    vs.push_back(c.v_win.to(at::kCPU, at::kFloat));
  }
  return attend_parts(q, ks, vs, scale, "int8_decode_attention");
}

}  // namespace ref

at::Tensor int8_decode_attention(const at::Tensor& q, const SelectiveInt8Cache& c, double scale) {
#ifdef KVX_WITH_CUDA
  if (q.is_cuda()) return cuda::int8_decode_attention(q, c, scale);
#endif
  return ref::int8_decode_attention(q, c, scale).to(q.device());
}

}  // namespace kvx::kernels
