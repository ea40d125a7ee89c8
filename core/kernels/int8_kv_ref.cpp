// Plain CPU reference of int8_kv.h's attention (ATen ops written for clarity, the yardstick the CUDA
// kernel is tested against) and the dispatching public functions.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include "core/common/error.h"
#include "core/kernels/int8_kv.h"

namespace kvx::kernels {

namespace ref {

at::Tensor int8_dequantize(const Int8Rows& r) {
  return r.codes.to(at::kCPU, at::kFloat) * r.scale.to(at::kCPU, at::kFloat).unsqueeze(3);
}

at::Tensor int8_attention(const at::Tensor& q, const Int8Rows* k, const Int8Rows* v, const FpSegment& sink_in,
                          const FpSegment& tail_in, double scale) {
  const FpSegment sink = sink_in.at_step(), tail = tail_in.at_step();
  std::vector<at::Tensor> ks{sink.k}, vs{sink.v};
  if (k && k->max_tokens() > 0) {
    ks.push_back(int8_dequantize(k->at_step()));
    vs.push_back(int8_dequantize(v->at_step()));
  }
  ks.push_back(tail.k);
  vs.push_back(tail.v);
  if (tail.tokens() < q.size(2))
    throw error("int8_attention: the window holds {} tokens, fewer than the {} queries' own", tail.tokens(), q.size(2));
  return attend_parts(q, ks, vs, scale, "int8_attention");
}

}  // namespace ref

std::string int8_attention_unsupported(int64_t head_dim) {
  return head_dim == 128 ? "" : fmt::format("head_dim {} (the fused kernels take 128)", head_dim);
}

at::Tensor int8_attention(const at::Tensor& q, const Int8Rows* k, const Int8Rows* v, const FpSegment& sink,
                          const FpSegment& tail, double scale) {
#ifdef KVX_WITH_CUDA
  if (q.is_cuda()) return cuda::int8_attention(q, k, v, sink, tail, scale);
#endif
  if (q.is_cuda()) throw error("int8_attention: this kvx build has no CUDA kernels");
  return ref::int8_attention(q, k, v, sink, tail, scale);
}

}  // namespace kvx::kernels
