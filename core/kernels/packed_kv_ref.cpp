// Plain CPU reference of packed_kv.h: scalar loops written for clarity, the yardstick the CUDA
// kernels are tested against, and the dispatching public functions.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "core/common/error.h"
#include "core/kernels/packed_kv.h"
#include "core/kernels/packed_layout.h"

namespace kvx::kernels {

int64_t tensor_bytes(const at::Tensor& t) { return t.defined() ? t.numel() * int64_t(t.element_size()) : 0; }

int64_t PackedBlock::bytes() const { return tensor_bytes(codes) + tensor_bytes(scale) + tensor_bytes(minv); }

at::Tensor at_step(const at::Tensor& x, const StepGrowth& g) {
  if (!g.step || !x.defined()) return x;
  if (!x.device().is_cpu()) throw error("at_step: a segment on {} moves with a counter the device reads", x.device().str());
  const int64_t d = *g.step;
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes[2] += g.len_rate * d;
  return x.as_strided(sizes, x.strides(), x.storage_offset() + g.off_rate * d * x.stride(2));
}

namespace {

void check_config(int64_t D, int bits, int group, bool per_channel, bool key_layout, const char* who) {
  if (bits != 2 && bits != 4 && bits != 8) throw error("{}: bits must be 2, 4 or 8, got {}", who, bits);
  if ((D * bits) % 32 != 0) throw error("{}: head_dim {} x {} bits is not a whole number of 32-bit words", who, D, bits);
  if (group < 1) throw error("{}: group must be >= 1", who);
  if (!per_channel && D % std::min<int64_t>(group, D) != 0)
    throw error("{}: group {} does not divide head_dim {}", who, group, D);
  if (per_channel && !key_layout) throw error("{}: per-channel groups need the key layout", who);
}

// Element offset of [b][h][i][j] in a 4-D tensor (any strides).
inline int64_t at4(const at::Tensor& t, int64_t b, int64_t h, int64_t i, int64_t j) {
  return b * t.stride(0) + h * t.stride(1) + i * t.stride(2) + j * t.stride(3);
}

// Affine min-max of n values at stride `step`: codes (unpacked) and (scale, min) in fp32.
void quantize_group(const float* x, int64_t n, int64_t step, int bits, uint8_t* codes, int64_t code_step, float& s_out,
                    float& m_out) {
  float lo = x[0], hi = x[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, x[i * step]);
    hi = std::max(hi, x[i * step]);
  }
  const float qmax = float((1 << bits) - 1);
  const float s = (hi - lo) / qmax;
  for (int64_t i = 0; i < n; ++i) {
    const float q = s == 0.f ? 0.f : std::nearbyint((x[i * step] - lo) / s);
    codes[i * code_step] = uint8_t(std::min(std::max(q, 0.f), qmax));
  }
  s_out = s;
  m_out = lo;
}

// Per-token groups of G channels per token (the group-major statistics), codes unpacked [n][D].
void quantize_tokens(const float* xb, int64_t n, int64_t D, int64_t G, int bits, uint8_t* codes, float* s, float* m) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t g = 0; g < D / G; ++g)
      quantize_group(xb + t * D + g * G, G, 1, bits, codes + t * D + g * G, 1, s[t * (D / G) + g], m[t * (D / G) + g]);
}

// A block whose tensors sit on the CPU (the reference's dst and inputs).
PackedBlock on_cpu(const PackedBlock& b) {
  PackedBlock c = b;
  c.codes = b.codes.to(at::kCPU);
  c.scale = b.scale.to(at::kCPU);
  c.minv = b.minv.to(at::kCPU);
  return c;
}

}  // namespace

namespace ref {

void pack_into(const at::Tensor& x_in, const PackedBlock& dst, int64_t t0) {
  if (x_in.dim() != 4) throw error("pack_into: expected [B, H, n, D], got {} dims", x_in.dim());
  const auto x = x_in.to(at::kCPU, at::kFloat).contiguous();
  const int64_t B = x.size(0), H = x.size(1), n = x.size(2), D = x.size(3), T = t0 + n;
  check_config(D, dst.bits, dst.group, dst.per_channel, dst.key_layout, "pack_into");
  const int cpw = 32 / dst.bits, W = int(D / cpw);
  if (dst.codes.size(2) < T || dst.codes.size(3) != W || !dst.codes.device().is_cpu())
    throw error("pack_into: destination holds {} tokens of {} words, needs {} of {}", dst.codes.size(2),
                dst.codes.size(3), T, W);
  const int64_t G = dst.per_channel ? dst.group : std::min<int64_t>(dst.group, D);
  if (dst.per_channel && t0 % G != 0) throw error("pack_into: per-channel groups start at a multiple of {}, not {}", G, t0);
  auto* codes = reinterpret_cast<uint32_t*>(dst.codes.data_ptr<int32_t>());
  auto* codes16 = reinterpret_cast<uint16_t*>(codes);
  auto* sc = dst.scale.data_ptr<at::Half>();
  auto* mn = dst.minv.data_ptr<at::Half>();
  std::vector<uint8_t> q(size_t(n * D));
  std::vector<float> s, m;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const float* xb = x.data_ptr<float>() + (b * H + h) * n * D;
      if (dst.per_channel) {
        for (int64_t g0 = 0; g0 < n; g0 += G)
          for (int64_t d = 0; d < D; ++d) {
            float gs, gm;
            quantize_group(xb + g0 * D + d, std::min(G, n - g0), D, dst.bits, q.data() + g0 * D + d, D, gs, gm);
            const int64_t mi = at4(dst.scale, b, h, (t0 + g0) / G, d);
            sc[mi] = at::Half(gs);
            mn[mi] = at::Half(gm);
          }
      } else {
        s.resize(size_t(n * (D / G)));
        m.resize(s.size());
        quantize_tokens(xb, n, D, G, dst.bits, q.data(), s.data(), m.data());
        for (int64_t t = 0; t < n; ++t)
          for (int64_t g = 0; g < D / G; ++g) {
            const int64_t mi = at4(dst.scale, b, h, g, t0 + t);
            sc[mi] = at::Half(s[size_t(t * (D / G) + g)]);
            mn[mi] = at::Half(m[size_t(t * (D / G) + g)]);
          }
      }
      const bool perm = layout::channels_permuted(dst.key_layout, dst.per_channel, D);
      for (int64_t t = 0; t < n; ++t)
        for (int w = 0; w < W; ++w) {
          uint32_t word = 0;  // the token's word in the layout's bit order, or plain (values)
          for (int i = 0; i < cpw; ++i) {
            const int p = w * cpw + i, c = perm ? layout::permuted_channel(p) : p;
            word |= uint32_t(q[size_t(t * D + c)]) << (dst.key_layout ? layout::key_bit(p, dst.bits) : layout::plain_bit(p, dst.bits));
          }
          if (dst.key_layout) {
            codes[at4(dst.codes, b, h, t0 + t, w)] = word;
            continue;
          }
          for (int hw = 0; hw < 2; ++hw) {  // each half-word where the value layout puts it
            const auto slot = layout::value_slot(t0 + t, T, w * cpw + hw * cpw / 2, dst.bits);
            codes16[2 * at4(dst.codes, b, h, slot.row, w) + slot.bit / 16] = uint16_t(word >> (16 * hw));
          }
        }
    }
}

PackedBlock quantize_pack(const at::Tensor& x, int bits, int group, bool per_channel, bool key_layout) {
  if (x.dim() != 4) throw error("quantize_pack: expected [B, H, T, D], got {} dims", x.dim());
  PackedBlock out = empty_block(x.size(0), x.size(1), x.size(2), x.size(3), bits, group, per_channel, key_layout, at::kCPU);
  if (x.size(2) > 0) ref::pack_into(x, out, 0);
  return out;
}

at::Tensor dequantize(const PackedBlock& b_in, at::ScalarType dtype, int64_t t0, int64_t t1) {
  const PackedBlock b = on_cpu(b_in);
  const int64_t B = b.codes.size(0), H = b.codes.size(1), T = b.codes.size(2);
  if (t1 < 0) t1 = T;
  if (t0 < 0 || t0 > t1 || t1 > T) throw error("dequantize: token range [{}, {}) outside a block of {}", t0, t1, T);
  const int cpw = 32 / b.bits;
  const int64_t D = b.codes.size(3) * cpw, G = b.group;
  auto out = at::empty({B, H, t1 - t0, D}, at::kFloat);
  float* po = out.data_ptr<float>();
  const auto* pc = reinterpret_cast<const uint32_t*>(b.codes.data_ptr<int32_t>());
  const at::Half* ps = b.scale.data_ptr<at::Half>();
  const at::Half* pm = b.minv.data_ptr<at::Half>();
  const uint32_t mask = (1u << b.bits) - 1;
  const bool perm = layout::channels_permuted(b.key_layout, b.per_channel, D);
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t d = 0; d < D; ++d) {
          const int p = perm ? layout::permuted_position(int(d)) : int(d);
          const auto slot = layout::code_slot(t, T, p, b.bits, b.key_layout);
          const uint32_t q = (pc[at4(b.codes, bb, h, slot.row, p / cpw)] >> slot.bit) & mask;
          const int64_t i = b.per_channel ? t / G : d / G, j = b.per_channel ? d : t;
          const float s = float(ps[at4(b.scale, bb, h, i, j)]), m = float(pm[at4(b.minv, bb, h, i, j)]);
          po[((bb * H + h) * (t1 - t0) + t - t0) * D + d] = float(q) * s + m;
        }
  return out.to(dtype);
}

at::Tensor attend_parts(const at::Tensor& q_in, const std::vector<at::Tensor>& ks, const std::vector<at::Tensor>& vs,
                        double scale, const char* who) {
  std::vector<at::Tensor> kk, vv;
  for (size_t i = 0; i < ks.size(); ++i)
    if (ks[i].defined() && ks[i].size(2) > 0) {
      kk.push_back(ks[i].to(at::kCPU, at::kFloat));
      vv.push_back(vs[i].to(at::kCPU, at::kFloat));
    }
  if (kk.empty()) throw error("{}: empty cache", who);
  auto K = at::cat(kk, 2), V = at::cat(vv, 2);  // [B, Hkv, T, D]
  auto q = q_in.to(at::kCPU, at::kFloat).contiguous();
  if (q.dim() != 4) throw error("{}: q must be [B, Hq, n, D]", who);
  const int64_t B = q.size(0), Hq = q.size(1), n = q.size(2), D = q.size(3), Hkv = K.size(1), T = K.size(2);
  if (Hq % Hkv != 0) throw error("{}: {} query heads do not group over {} KV heads", who, Hq, Hkv);
  if (n > T) throw error("{}: {} queries but only {} cached tokens (the last n are the queries' own)", who, n, T);
  const int64_t rows = Hq / Hkv * n;
  auto qg = q.view({B, Hkv, rows, D});  // row = head-in-group · n + token
  auto s = at::matmul(qg, K.transpose(2, 3)) * scale;  // [B, Hkv, rows, T]
  auto tok = at::arange(rows).remainder(n).unsqueeze(1);             // the row's chunk token
  auto masked = at::arange(T).unsqueeze(0) > (T - n) + tok;          // [rows, T]
  s = s.masked_fill(masked, -std::numeric_limits<float>::infinity());
  return at::matmul(at::softmax(s, -1), V).view({B, Hq, n, D});
}

at::Tensor packed_attention(const at::Tensor& q, const PackedBlock* k, const PackedBlock* v, const FpSegment& sink_in,
                            const FpSegment& tail_in, double scale) {
  const FpSegment sink = sink_in.at_step(), tail = tail_in.at_step();
  std::vector<at::Tensor> ks{sink.k}, vs{sink.v};
  if (k && k->tokens() > 0) {
    ks.push_back(ref::dequantize(*k, at::kFloat));
    vs.push_back(ref::dequantize(*v, at::kFloat));
  }
  ks.push_back(tail.k);
  vs.push_back(tail.v);
  if (tail.tokens() < q.size(2))
    throw error("packed_attention: the tail holds {} tokens, fewer than the {} queries' own", tail.tokens(), q.size(2));
  return attend_parts(q, ks, vs, scale, "packed_attention");
}

}  // namespace ref

void pack_into(const at::Tensor& x, const PackedBlock& dst, int64_t t0) {
  if (!dst.key_layout && t0 % 2 == 1) {
    // the old last token (plain) pairs with the first new one: its high half-words move to the
    // low half-words of the next row (packed_layout.h's value layout); both sides are 16-bit views
    auto c16 = dst.codes.view(at::kShort);  // [B, H, cap, 2W]
    const int64_t w2 = c16.size(3);
    auto from = c16.select(2, t0 - 1).slice(2, 1, w2, 2);
    c16.select(2, t0).slice(2, 0, w2, 2).copy_(from);
    from.zero_();
  }
#ifdef KVX_WITH_CUDA
  if (dst.codes.is_cuda()) return cuda::pack_into(x, dst, t0);
#endif
  if (dst.codes.is_cuda()) throw error("pack_into: this kvx build has no CUDA kernels");
  ref::pack_into(x, dst, t0);
}

PackedBlock empty_block(int64_t B, int64_t H, int64_t T, int64_t D, int bits, int group, bool per_channel, bool key_layout,
                        at::Device device) {
  check_config(D, bits, group, per_channel, key_layout, "packed block");
  PackedBlock b;
  b.bits = bits;
  b.group = int(per_channel ? group : std::min<int64_t>(group, D));
  b.per_channel = per_channel;
  b.key_layout = key_layout;
  const auto opt = at::TensorOptions().device(device);
  b.codes = at::zeros({B, H, T, D * bits / 32}, opt.dtype(at::kInt));
  b.scale = per_channel ? at::zeros({B, H, (T + group - 1) / group, D}, opt.dtype(at::kHalf))
                        : at::zeros({B, H, D / b.group, T}, opt.dtype(at::kHalf));
  b.minv = at::zeros_like(b.scale);
  return b;
}

PackedBlock quantize_pack(const at::Tensor& x, int bits, int group, bool per_channel, bool key_layout) {
  if (!x.is_cuda()) return ref::quantize_pack(x, bits, group, per_channel, key_layout);
  if (x.dim() != 4) throw error("quantize_pack: expected [B, H, T, D], got {} dims", x.dim());
  PackedBlock out = empty_block(x.size(0), x.size(1), x.size(2), x.size(3), bits, group, per_channel, key_layout, x.device());
  if (x.size(2) > 0) pack_into(x, out, 0);
  return out;
}

at::Tensor dequantize(const PackedBlock& b, at::ScalarType dtype, int64_t t0, int64_t t1) {
#ifdef KVX_WITH_CUDA
  if (b.codes.is_cuda()) return cuda::dequantize(b, dtype, t0, t1 < 0 ? b.tokens() : t1);
#endif
  return ref::dequantize(b, dtype, t0, t1).to(b.codes.device());
}

std::string packed_attention_unsupported(const PackedBlock& k, const PackedBlock& v, int64_t head_dim) {
  if (head_dim != 128) return fmt::format("head_dim {} (the fused kernels take 128)", head_dim);
  if (!k.key_layout || v.key_layout || v.per_channel)
    return "keys in the key layout and per-token values are needed (per-channel values are not fused)";
  if (k.per_channel && (k.group % 32 != 0 || (k.group & (k.group - 1)) != 0))
    return fmt::format("per-channel key groups of {} tokens (the kernel takes 32·2^n)", k.group);
  if (!k.per_channel && k.group != v.group)
    return fmt::format("per-token key groups of {} channels beside value groups of {} (the kernel needs them equal)",
                       k.group, v.group);
  if (!k.per_channel && k.group != 32 && k.group != 64 && k.group != 128)
    return fmt::format("per-token key groups of {} channels (the kernel takes 32, 64 or 128)", k.group);
  if (v.group % 16 != 0) return fmt::format("value groups of {} channels (the kernel takes multiples of 16)", v.group);
  return "";
}

at::Tensor packed_attention(const at::Tensor& q, const PackedBlock* k, const PackedBlock* v, const FpSegment& sink,
                            const FpSegment& tail, double scale) {
#ifdef KVX_WITH_CUDA
  if (q.is_cuda()) return cuda::packed_attention(q, k, v, sink, tail, scale);
#endif
  if (q.is_cuda()) throw error("packed_attention: this kvx build has no CUDA kernels");
  return ref::packed_attention(q, k, v, sink, tail, scale);
}

at::Tensor dense_attention(const at::Tensor& q, const FpSegment& sink, const FpSegment& tail, double scale) {
  return packed_attention(q, nullptr, nullptr, sink, tail, scale);
}

const char* attention_path(const at::Tensor& q) {
#ifdef KVX_WITH_CUDA
  if (q.is_cuda()) return "fused";
#endif
  return "cpu_reference";
}

}  // namespace kvx::kernels
