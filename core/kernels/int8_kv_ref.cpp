// Plain CPU reference of int8_kv.h (scalar loops and ATen matmuls written for clarity, the
// yardstick the CUDA kernels are tested against) and the dispatching public functions.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/common/error.h"
#include "core/kernels/int8_kv.h"
#include "core/kernels/packed_kv.h"

namespace kvx::kernels {

namespace {
int64_t nbytes(const at::Tensor& t) { return t.defined() ? t.numel() * int64_t(t.element_size()) : 0; }
bool has_tokens(const at::Tensor& t) { return t.defined() && t.size(2) > 0; }
}  // namespace

int64_t Int8Rows::bytes() const { return nbytes(codes) + nbytes(scale); }

int64_t SelectiveInt8Cache::bytes() const {
  return nbytes(k_sink) + nbytes(v_sink) + k_body.bytes() + v_body.bytes() + nbytes(k_win) + nbytes(v_win);
}

namespace ref {

Int8Rows int8_quantize(const at::Tensor& x_in) {
  if (x_in.dim() != 4) throw error("int8_quantize: expected [B, H, T, D], got {} dims", x_in.dim());
  const auto x = x_in.to(at::kCPU, at::kFloat).contiguous();
  const int64_t D = x.size(3), rows = x.numel() / std::max<int64_t>(D, 1);
  Int8Rows r;
  r.codes = at::empty(x.sizes(), at::kChar);
  r.scale = at::empty({x.size(0), x.size(1), x.size(2)}, at::kFloat);
  const float* px = x.data_ptr<float>();
  int8_t* pc = r.codes.data_ptr<int8_t>();
  float* ps = r.scale.data_ptr<float>();
  for (int64_t i = 0; i < rows; ++i) {
    float a = 0.f;
    for (int64_t d = 0; d < D; ++d) a = std::max(a, std::fabs(px[i * D + d]));
    const float s = std::max(a, 1e-8f) / 127.f;
    for (int64_t d = 0; d < D; ++d)
      pc[i * D + d] = int8_t(std::min(std::max(std::nearbyint(px[i * D + d] / s), -127.f), 127.f));
    ps[i] = s;
  }
  return r;
}

at::Tensor int8_dequantize(const Int8Rows& r, at::ScalarType dtype) {
  return (r.codes.to(at::kCPU, at::kFloat) * r.scale.to(at::kCPU, at::kFloat).unsqueeze(-1)).to(dtype);
}

at::Tensor int8_decode_attention(const at::Tensor& q, const SelectiveInt8Cache& c, double scale) {
  std::vector<at::Tensor> ks, vs;
  if (has_tokens(c.k_sink)) {
    ks.push_back(c.k_sink.to(at::kCPU, at::kFloat));
    vs.push_back(c.v_sink.to(at::kCPU, at::kFloat));
  }
  if (c.k_body.tokens() > 0) {
    ks.push_back(ref::int8_dequantize(c.k_body, at::kFloat));
    vs.push_back(ref::int8_dequantize(c.v_body, at::kFloat));
  }
  if (has_tokens(c.k_win)) {
    ks.push_back(c.k_win.to(at::kCPU, at::kFloat));
    vs.push_back(c.v_win.to(at::kCPU, at::kFloat));
  }
  return attend_parts(q, ks, vs, scale, "int8_decode_attention");
}

}  // namespace ref

Int8Rows int8_quantize(const at::Tensor& x) {
#ifdef KVX_WITH_CUDA
  if (x.is_cuda()) return cuda::int8_quantize(x);
#endif
  if (x.is_cuda()) throw error("int8_quantize: this kvx build has no CUDA kernels");
  return ref::int8_quantize(x);
}

at::Tensor int8_dequantize(const Int8Rows& r, at::ScalarType dtype) {
#ifdef KVX_WITH_CUDA
  if (r.codes.is_cuda()) return cuda::int8_dequantize(r, dtype);
#endif
  return ref::int8_dequantize(r, dtype).to(r.codes.device());
}

at::Tensor int8_decode_attention(const at::Tensor& q, const SelectiveInt8Cache& c, double scale) {
#ifdef KVX_WITH_CUDA
  if (q.is_cuda()) return cuda::int8_decode_attention(q, c, scale);
#endif
  return ref::int8_decode_attention(q, c, scale).to(q.device());
}

}  // namespace kvx::kernels
