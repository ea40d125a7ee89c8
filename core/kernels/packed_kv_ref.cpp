// Plain CPU reference of packed_kv.h: scalar loops written for clarity, the yardstick the CUDA
// kernels are tested against.
#include <ATen/ATen.h>

#include <cmath>

#include "core/common/error.h"
#include "core/kernels/packed_kv.h"
#include "core/kernels/packed_layout.h"

namespace kvx::kernels {

int64_t tensor_bytes(const at::Tensor& t) { return t.defined() ? t.numel() * int64_t(t.element_size()) : 0; }

int64_t PackedBlock::bytes() const { return tensor_bytes(codes) + tensor_bytes(scale) + tensor_bytes(minv); }

namespace {

void check_config(const at::Tensor& x, int bits, int group, bool per_channel) {
  if (x.dim() != 4) throw error("quantize_pack: expected [B, H, T, D], got {} dims", x.dim());
  if (bits != 2 && bits != 4 && bits != 8) throw error("quantize_pack: bits must be 2, 4 or 8, got {}", bits);
  if ((x.size(3) * bits) % 32 != 0)
    throw error("quantize_pack: head_dim {} x {} bits is not a whole number of 32-bit words", x.size(3), bits);
  if (group < 1) throw error("quantize_pack: group must be >= 1");
  if (per_channel && x.size(2) % group != 0)
    throw error("quantize_pack: per-channel groups need a multiple of {} tokens, got {}", group, x.size(2));
}

// Affine min-max of n values at stride `step`: fills codes (unpacked) and returns (scale, min).
void quantize_group(const float* x, int64_t n, int64_t step, int bits, uint8_t* codes, int64_t code_step,
                    at::Half* s_out, at::Half* m_out) {
  float lo = x[0], hi = x[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, x[i * step]);
    hi = std::max(hi, x[i * step]);
  }
  const float qmax = float((1 << bits) - 1);
  const float s = (hi - lo) / qmax;
  for (int64_t i = 0; i < n; ++i) {
    float q = s == 0.f ? 0.f : std::nearbyint((x[i * step] - lo) / s);
    codes[i * code_step] = uint8_t(std::min(std::max(q, 0.f), qmax));
  }
  *s_out = at::Half(s);
  *m_out = at::Half(lo);
}

}  // namespace

namespace ref {

PackedBlock quantize_pack(const at::Tensor& x_in, int bits, int group, bool per_channel) {
  check_config(x_in, bits, group, per_channel);
  auto x = x_in.to(at::kCPU, at::kFloat).contiguous();
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3);
  const int64_t G = per_channel ? group : std::min<int64_t>(group, D);
  if (!per_channel && D % G != 0) throw error("quantize_pack: group {} does not divide head_dim {}", G, D);
  const int cpw = 32 / bits;
  PackedBlock out;
  out.bits = bits;
  out.group = int(G);
  out.per_channel = per_channel;
  out.codes = at::zeros({B, H, T, D / cpw}, at::kInt);
  auto hopt = at::TensorOptions().dtype(at::kHalf);
  out.scale = per_channel ? at::empty({B, H, T / G, D}, hopt) : at::empty({B, H, D / G, T}, hopt);
  out.minv = at::empty_like(out.scale);
  std::vector<uint8_t> codes(size_t(T * D));
  const float* px = x.data_ptr<float>();
  auto* pc = reinterpret_cast<uint32_t*>(out.codes.data_ptr<int32_t>());
  auto* ps = out.scale.data_ptr<at::Half>();
  auto* pm = out.minv.data_ptr<at::Half>();
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const float* xb = px + bh * T * D;
    if (per_channel) {
      for (int64_t g = 0; g < T / G; ++g)
        for (int64_t d = 0; d < D; ++d) {
          int64_t mi = (bh * (T / G) + g) * D + d;
          quantize_group(xb + g * G * D + d, G, D, bits, codes.data() + g * G * D + d, D, ps + mi, pm + mi);
        }
    } else {
      for (int64_t t = 0; t < T; ++t)
        for (int64_t g = 0; g < D / G; ++g) {
          int64_t mi = (bh * (D / G) + g) * T + t;
          quantize_group(xb + t * D + g * G, G, 1, bits, codes.data() + t * D + g * G, 1, ps + mi, pm + mi);
        }
    }
    uint32_t* cb = pc + bh * T * (D / cpw);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < D; ++d) {
        const auto slot = layout::code_slot(t, T, int(d), bits, per_channel);
        cb[slot.row * (D / cpw) + d / cpw] |= uint32_t(codes[t * D + d]) << slot.bit;
      }
  }
  return out;
}

at::Tensor dequantize(const PackedBlock& b, at::ScalarType dtype) {
  auto codes = b.codes.to(at::kCPU).contiguous();
  auto sc = b.scale.to(at::kCPU, at::kFloat).contiguous();
  auto mn = b.minv.to(at::kCPU, at::kFloat).contiguous();
  const int64_t B = codes.size(0), H = codes.size(1), T = codes.size(2);
  const int cpw = 32 / b.bits;
  const int64_t D = codes.size(3) * cpw, G = b.group;
  auto out = at::empty({B, H, T, D}, at::kFloat);
  float* po = out.data_ptr<float>();
  const auto* pc = reinterpret_cast<const uint32_t*>(codes.data_ptr<int32_t>());
  const float* ps = sc.data_ptr<float>();
  const float* pm = mn.data_ptr<float>();
  const uint32_t mask = (1u << b.bits) - 1;
  for (int64_t bh = 0; bh < B * H; ++bh)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < D; ++d) {
        const auto slot = layout::code_slot(t, T, int(d), b.bits, b.per_channel);
        uint32_t q = (pc[(bh * T + slot.row) * (D / cpw) + d / cpw] >> slot.bit) & mask;
        int64_t mi = b.per_channel ? (bh * (T / G) + t / G) * D + d : (bh * (D / G) + d / G) * T + t;
        po[(bh * T + t) * D + d] = float(q) * ps[mi] + pm[mi];
      }
  return out.to(dtype);
}

at::Tensor decode_attention(const at::Tensor& q, const PackedBlock& k, const PackedBlock& v,
                            const at::Tensor& k_res, const at::Tensor& v_res, double scale) {
  std::vector<at::Tensor> ks, vs;
  if (k.tokens() > 0) {
    ks.push_back(ref::dequantize(k, at::kFloat));
    vs.push_back(ref::dequantize(v, at::kFloat));
  }
  if (k_res.defined() && k_res.size(2) > 0) {
    ks.push_back(k_res.to(at::kCPU, at::kFloat));
    vs.push_back(v_res.to(at::kCPU, at::kFloat));
  }
  return attend_parts(q, ks, vs, scale, "decode_attention");
}

at::Tensor attend_parts(const at::Tensor& q, const std::vector<at::Tensor>& ks, const std::vector<at::Tensor>& vs,
                        double scale, const char* who) {
  if (ks.empty()) throw error("{}: empty cache", who);
  auto K = at::cat(ks, 2), V = at::cat(vs, 2);  // [B, Hkv, T, D]
  auto qf = q.to(at::kCPU, at::kFloat);
  const int64_t B = qf.size(0), Hq = qf.size(1), D = qf.size(2), Hkv = K.size(1);
  if (Hq % Hkv != 0) throw error("{}: {} query heads do not group over {} KV heads", who, Hq, Hkv);
  auto qg = qf.view({B, Hkv, Hq / Hkv, D});
  auto s = at::matmul(qg, K.transpose(2, 3)) * scale;  // [B, Hkv, rep, T]
  return at::matmul(at::softmax(s, -1), V).reshape({B, Hq, D});
}

}  // namespace ref

PackedBlock concat(const PackedBlock& a, const PackedBlock& b) {
  if (!a.codes.defined()) return b;
  if (a.bits != b.bits || a.group != b.group || a.per_channel != b.per_channel)
    throw error("concat: blocks of different configurations");
  // values pair tokens (2u, 2u + 1) in their words: an odd count would pair a's last token with b's first
  if (!a.per_channel && a.tokens() % 2 != 0) throw error("concat: a per-token block of {} tokens (odd) cannot be extended", a.tokens());
  PackedBlock out = a;
  const int stat_dim = a.per_channel ? 2 : 3;  // stats: [.., T/G, D] or [.., D/G, T]
  out.codes = at::cat({a.codes, b.codes}, 2);
  out.scale = at::cat({a.scale, b.scale}, stat_dim);
  out.minv = at::cat({a.minv, b.minv}, stat_dim);
  return out;
}

PackedBlock quantize_pack(const at::Tensor& x, int bits, int group, bool per_channel) {
#ifdef KVX_WITH_CUDA
  if (x.is_cuda()) return cuda::quantize_pack(x, bits, group, per_channel);
#endif
  if (x.is_cuda()) throw error("quantize_pack: this kvx build has no CUDA kernels");
  return ref::quantize_pack(x, bits, group, per_channel);
}

at::Tensor dequantize(const PackedBlock& b, at::ScalarType dtype) {
#ifdef KVX_WITH_CUDA
  if (b.codes.is_cuda()) return cuda::dequantize(b, dtype);
#endif
  return ref::dequantize(b, dtype).to(b.codes.device());
}

at::Tensor decode_attention(const at::Tensor& q, const PackedBlock& k, const PackedBlock& v,
                            const at::Tensor& k_res, const at::Tensor& v_res, double scale) {
#ifdef KVX_WITH_CUDA
  if (q.is_cuda()) return cuda::decode_attention(q, k, v, k_res, v_res, scale);
#endif
  return ref::decode_attention(q, k, v, k_res, v_res, scale).to(q.device());
}

const char* decode_attention_path(const at::Tensor& q) {
#ifdef KVX_WITH_CUDA
  if (q.is_cuda()) return "fused";
#endif
  return "cpu";
}

}  // namespace kvx::kernels
