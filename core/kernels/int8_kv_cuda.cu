// CUDA kernels of int8_kv.h. The CPU reference (int8_kv_ref.cpp) defines the numbers; the tests in
// tests/kernels compare the two per GQA ratio, odd length and sink/window size.
//
// Decode attention: one launch whose blocks each own one split of one segment (sinks, int8 body or
// window), so the fp16 segments cost no extra launch and the body needs no dequantized copy; the
// splits are merged by combine_kernel (log-sum-exp). Per block: 4 warps stream 32-token tiles; in
// the score phase a lane owns one token (one 128-byte int8 row, scale applied once to the dot
// product), in the value phase a lane owns 8 channels of every other token of the tile (8-byte
// int8 / 16-byte fp16 loads; the two token slots are summed at the end). An int8 key tile
// (4 KiB, contiguous in memory) is first staged in shared memory with coalesced 16-byte loads:
// lanes reading their own rows straight from global memory touch 32 lines per load instruction
// (H100, llama3-8b B8 32K: 566 µs before staging, 394 µs after).
//
// Measured on H100 (kernel_bench, CUDA graphs): llama3-8b (GQA 4) 32K: B8 394 µs = 1.18x SDPA
// (1409 GB/s), B1 71 µs = 1.3x; llama2-7b (MHA) B8 8K: 275 µs = 1.45x SDPA (2025 GB/s). At GQA 4
// both phases are FP32-FMA bound (NREP·128 FMAs per token each); moving them onto the tensor cores
// as packed_kv_cuda.cu does is the next step.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>

#include "core/common/error.h"
#include "core/kernels/decode_common.cuh"
#include "core/kernels/int8_kv.h"

namespace kvx::kernels::cuda {
namespace {

constexpr int kD = 128;    // head_dim of the fused attention kernel
constexpr int kWarps = 4;  // warps per block
constexpr int kTile = 32;  // tokens per warp tile
constexpr int kCh = 8;     // value channels per lane
constexpr int kLpt = kD / kCh;   // lanes per token in the value phase
constexpr int kTpi = 32 / kLpt;  // tokens per value pass
constexpr int kRow16 = kD / 16;  // 16-byte chunks per int8 row

// Byte K of a word of signed int8 codes as an exact float without I2F (a quarter-rate unit): wx = word ^ 0x80808080 makes the byte b + 128; one byte permute builds
// the float 2^23 + b + 128, one add removes the offset.
template <int K>
__device__ __forceinline__ float s8_to_f(uint32_t wx) {
  return __int_as_float(int(__byte_perm(wx, 0x00004B00u, 0x5440u | K))) - 8388736.f;
}

// ---------------------------------------------------------------- fused decode attention
struct Segment {
  const void* k;      // int8 codes or dense rows (TD)
  const void* v;
  const float* ks;    // int8 only: per-token scales [B·Hkv, T]
  const float* vs;
  int64_t k_bh, v_bh; // elements between consecutive (b, h) of k / v
  int T;
  int tokens_per_split;
  int split0;         // first blockIdx.x of this segment
  int is_int8;
};

struct Int8AttnParams {
  const void* q;  // [B, Hq, kD], batch stride q_bs, dtype q_type (see load_q)
  int64_t q_bs;
  int q_type;
  int Hq, Hkv;
  Segment seg[3];
  int n_seg;
  int n_splits_total;
  float scale_log2;  // softmax scale · log2(e)
  float* part_o;     // [B, Hq, n_splits_total, kD]
  float* part_m;     // [B, Hq, n_splits_total]
  float* part_l;
};

template <int NREP, typename TD>
__global__ void __launch_bounds__(kWarps * 32) int8_attention_kernel(const Int8AttnParams p) {
  __shared__ __align__(16) float q_s[NREP][kD];
  __shared__ float p_s[kWarps][NREP][kTile];
  __shared__ float red_m[kWarps][NREP], red_l[kWarps][NREP];
  __shared__ float red_o[kWarps][NREP][kD];
  // one padding chunk per row: lanes reading rows l and l+1 fall in different banks
  __shared__ int4 k_tile[kWarps][kTile][kRow16 + 1];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int hkv = blockIdx.y, b = blockIdx.z;
  const int64_t bh = int64_t(b) * p.Hkv + hkv;
  // constant indices only: a dynamic index would copy the parameter block to local memory
  const int split = blockIdx.x;
  const Segment sg = (p.n_seg > 2 && split >= p.seg[2].split0) ? p.seg[2]
                     : (p.n_seg > 1 && split >= p.seg[1].split0) ? p.seg[1] : p.seg[0];
  const int t_begin = (split - sg.split0) * sg.tokens_per_split;
  const int t_end = min(sg.T, t_begin + sg.tokens_per_split);

  for (int i = threadIdx.x; i < NREP * kD; i += blockDim.x)
    q_s[i / kD][i % kD] = load_q(p.q, p.q_type, p.q_bs, b, int64_t(hkv * NREP + i / kD) * kD + i % kD);
  __syncthreads();

  const int slot = lane / kLpt, c0 = (lane % kLpt) * kCh;
  float m[NREP], l[NREP], acc[NREP][kCh];
#pragma unroll
  for (int h = 0; h < NREP; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.f;
#pragma unroll
    for (int c = 0; c < kCh; ++c) acc[h][c] = 0.f;
  }

  for (int t0 = t_begin + warp * kTile; t0 < t_end; t0 += kWarps * kTile) {
    // ---- scores: lane = token
    const int t = t0 + lane;
    float s[NREP];
#pragma unroll
    for (int h = 0; h < NREP; ++h) s[h] = 0.f;
    if (sg.is_int8) {
      const int4* tile = reinterpret_cast<const int4*>(static_cast<const int8_t*>(sg.k) + bh * sg.k_bh + int64_t(t0) * kD);
#pragma unroll
      for (int i = 0; i < kRow16; ++i) {
        const int idx = i * 32 + lane, tok = idx / kRow16;
        if (t0 + tok < t_end) k_tile[warp][tok][idx % kRow16] = tile[idx];
      }
      __syncwarp();
    }
    if (t < t_end) {
      if (sg.is_int8) {
#pragma unroll
        for (int w = 0; w < kRow16; ++w) {
          const int4 raw = k_tile[warp][lane][w];
          const uint32_t words[4] = {uint32_t(raw.x) ^ 0x80808080u, uint32_t(raw.y) ^ 0x80808080u,
                                     uint32_t(raw.z) ^ 0x80808080u, uint32_t(raw.w) ^ 0x80808080u};
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const float x[4] = {s8_to_f<0>(words[j]), s8_to_f<1>(words[j]), s8_to_f<2>(words[j]), s8_to_f<3>(words[j])};
#pragma unroll
            for (int h = 0; h < NREP; ++h) {
              const float4 qv = *reinterpret_cast<const float4*>(&q_s[h][w * 16 + j * 4]);
              s[h] += qv.x * x[0] + qv.y * x[1] + qv.z * x[2] + qv.w * x[3];
            }
          }
        }
        const float ksc = sg.ks[bh * sg.T + t];  // one per token: applied to the dot product
#pragma unroll
        for (int h = 0; h < NREP; ++h) s[h] *= ksc;
      } else {
        const uint4* row = reinterpret_cast<const uint4*>(static_cast<const TD*>(sg.k) + bh * sg.k_bh + int64_t(t) * kD);
        constexpr int kPer = 16 / int(sizeof(TD));
#pragma unroll
        for (int w = 0; w < kD / kPer; ++w) {
          const uint4 raw = row[w];
          const TD* vals = reinterpret_cast<const TD*>(&raw);
#pragma unroll
          for (int j = 0; j < kPer; ++j) {
            const float x = to_f(vals[j]);
#pragma unroll
            for (int h = 0; h < NREP; ++h) s[h] += q_s[h][w * kPer + j] * x;
          }
        }
      }
    }
    // ---- online softmax over the tile
#pragma unroll
    for (int h = 0; h < NREP; ++h) {
      const float sh = t < t_end ? s[h] * p.scale_log2 : -INFINITY;
      const float m_new = fmaxf(m[h], warp_max(sh));
      const float pr = m_new == -INFINITY ? 0.f : exp2f(sh - m_new);
      const float corr = m_new == -INFINITY ? 1.f : exp2f(m[h] - m_new);
      l[h] = l[h] * corr + warp_sum(pr);
      m[h] = m_new;
#pragma unroll
      for (int c = 0; c < kCh; ++c) acc[h][c] *= corr;
      p_s[warp][h][lane] = pr;
    }
    __syncwarp();
    // ---- values: lane = kCh channels of one token slot (coalesced rows)
#pragma unroll 4
    for (int it = 0; it < kTile / kTpi; ++it) {
      const int tl = it * kTpi + slot;
      const int64_t tv = t0 + tl;
      if (tv >= t_end) continue;
      float x[kCh];
      float row_scale = 1.f;  // int8: the token's scale goes on its probabilities (NREP products, not kCh)
      if (sg.is_int8) {
        const int2 raw = *reinterpret_cast<const int2*>(static_cast<const int8_t*>(sg.v) + bh * sg.v_bh + tv * kD + c0);
        const uint32_t w0 = uint32_t(raw.x) ^ 0x80808080u, w1 = uint32_t(raw.y) ^ 0x80808080u;
        row_scale = sg.vs[bh * sg.T + tv];
        x[0] = s8_to_f<0>(w0);
        x[1] = s8_to_f<1>(w0);
        x[2] = s8_to_f<2>(w0);
        x[3] = s8_to_f<3>(w0);
        x[4] = s8_to_f<0>(w1);
        x[5] = s8_to_f<1>(w1);
        x[6] = s8_to_f<2>(w1);
        x[7] = s8_to_f<3>(w1);
      } else {
        const uint4 raw = *reinterpret_cast<const uint4*>(static_cast<const TD*>(sg.v) + bh * sg.v_bh + tv * kD + c0);
        const TD* vals = reinterpret_cast<const TD*>(&raw);
#pragma unroll
        for (int c = 0; c < kCh; ++c) x[c] = to_f(vals[c]);
      }
#pragma unroll
      for (int h = 0; h < NREP; ++h) {
        const float pr = p_s[warp][h][tl] * row_scale;
#pragma unroll
        for (int c = 0; c < kCh; ++c) acc[h][c] += pr * x[c];
      }
    }
    __syncwarp();
  }

  // ---- token slots of one channel chunk -> lanes < kLpt; then merge the block's warps
#pragma unroll
  for (int o = kLpt; o < 32; o <<= 1)
#pragma unroll
    for (int h = 0; h < NREP; ++h)
#pragma unroll
      for (int c = 0; c < kCh; ++c) acc[h][c] += __shfl_xor_sync(kFullMask, acc[h][c], o);
#pragma unroll
  for (int h = 0; h < NREP; ++h) {
    if (lane == 0) {
      red_m[warp][h] = m[h];
      red_l[warp][h] = l[h];
    }
    if (lane < kLpt)
#pragma unroll
      for (int c = 0; c < kCh; ++c) red_o[warp][h][c0 + c] = acc[h][c];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < NREP * kD; i += blockDim.x) {
    const int h = i / kD, d = i % kD;
    float M = -INFINITY;
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, red_m[w][h]);
    float L = 0.f, O = 0.f;
    if (M != -INFINITY)
      for (int w = 0; w < kWarps; ++w) {
        const float f = exp2f(red_m[w][h] - M);
        L += red_l[w][h] * f;
        O += red_o[w][h][d] * f;
      }
    const int64_t slot = (int64_t(b) * p.Hq + hkv * NREP + h) * p.n_splits_total + split;
    p.part_o[slot * kD + d] = O;
    if (d == 0) {
      p.part_m[slot] = M;
      p.part_l[slot] = L;
    }
  }
}

template <typename TD>
void launch_nrep(int nrep, dim3 grid, const Int8AttnParams& p, cudaStream_t st) {
  switch (nrep) {
#define KVX_NREP(N) \
  case N: int8_attention_kernel<N, TD><<<grid, kWarps * 32, 0, st>>>(p); break;
    KVX_NREP(1) KVX_NREP(2) KVX_NREP(3) KVX_NREP(4) KVX_NREP(7) KVX_NREP(8)
#undef KVX_NREP
    default: throw error("int8 decode attention: GQA ratio {} is not compiled (1, 2, 3, 4, 7, 8)", nrep);
  }
}

// About four blocks per SM over all (b, h), >= one tile per warp per split.
int tokens_per_split(int64_t T, int64_t bh_blocks) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t want = std::max<int64_t>(1, (4 * sms + bh_blocks - 1) / bh_blocks);
  int64_t tps = (T + want - 1) / want;
  tps = std::max<int64_t>(kWarps * kTile, (tps + kTile - 1) / kTile * kTile);
  return int(tps);
}

// [B, Hkv, T, kD] with contiguous 16-byte-aligned rows (a narrowed token range of a larger buffer
// is fine), else a contiguous copy.
at::Tensor rows_of(const at::Tensor& x, int64_t B, int64_t Hkv, const char* what) {
  if (x.dim() != 4 || x.size(0) != B || x.size(1) != Hkv || x.size(3) != kD)
    throw error("int8 decode attention: {} must be [{}, {}, T, {}]", what, B, Hkv, kD);
  const bool ok = x.stride(3) == 1 && x.stride(2) == kD && x.stride(0) == x.size(1) * x.stride(1) &&
                  reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
  return ok ? x : x.contiguous();
}

}  // namespace

at::Tensor int8_decode_attention(const at::Tensor& q, const SelectiveInt8Cache& c, double scale) {
  const c10::cuda::CUDAGuard guard(q.device());
  if (q.dim() != 3 || q.size(2) != kD) throw error("int8 decode attention: q must be [B, Hq, {}]", kD);
  const int64_t B = q.size(0), Hq = q.size(1);
  auto tokens = [](const at::Tensor& t) { return t.defined() ? t.size(2) : int64_t(0); };
  const at::Tensor* any = tokens(c.k_sink) > 0 ? &c.k_sink : c.k_body.tokens() > 0 ? &c.k_body.codes : &c.k_win;
  if (tokens(*any) == 0) throw error("int8 decode attention: empty cache");
  const int64_t Hkv = any->size(1);
  if (Hq % Hkv != 0) throw error("int8 decode attention: {} query heads do not group over {} KV heads", Hq, Hkv);
  const int nrep = int(Hq / Hkv);

  at::Tensor qc = q;
  if (q.stride(2) != 1 || q.stride(1) != kD) qc = q.contiguous();
  int q_type = 0;
  if (qc.scalar_type() == at::kHalf) q_type = 1;
  else if (qc.scalar_type() == at::kBFloat16) q_type = 2;
  else if (qc.scalar_type() != at::kFloat) qc = qc.to(at::kFloat).contiguous();

  Int8AttnParams p{};
  p.q = qc.data_ptr();
  p.q_bs = qc.stride(0);
  p.q_type = q_type;
  p.Hq = int(Hq);
  p.Hkv = int(Hkv);
  p.scale_log2 = float(scale * 1.4426950408889634);

  std::vector<at::Tensor> keep;  // tensors whose pointers the launch uses
  at::ScalarType dense_type = at::kHalf;
  bool dense_seen = false;
  int splits = 0;
  auto add_dense = [&](const at::Tensor& k, const at::Tensor& v, const char* what) {
    if (tokens(k) == 0) return;
    auto kr = rows_of(k, B, Hkv, what), vr = rows_of(v, B, Hkv, what);
    if (kr.scalar_type() != vr.scalar_type() || (dense_seen && kr.scalar_type() != dense_type) ||
        (kr.scalar_type() != at::kHalf && kr.scalar_type() != at::kBFloat16) || vr.size(2) != kr.size(2))
      throw error("int8 decode attention: sinks and window must be float16 or bfloat16, one dtype, K and V alike");
    dense_type = kr.scalar_type();
    dense_seen = true;
    Segment& s = p.seg[p.n_seg++];
    s.k = kr.data_ptr();
    s.v = vr.data_ptr();
    s.k_bh = kr.stride(1);
    s.v_bh = vr.stride(1);
    s.T = int(kr.size(2));
    keep.push_back(kr);
    keep.push_back(vr);
  };
  add_dense(c.k_sink, c.v_sink, "sink keys/values");
  if (c.k_body.tokens() > 0) {
    const int64_t N = c.k_body.tokens();
    const auto kc = c.k_body.codes.contiguous(), vc = c.v_body.codes.contiguous();
    const auto ks = c.k_body.scale.contiguous(), vs = c.v_body.scale.contiguous();
    if (kc.dim() != 4 || kc.size(0) != B || kc.size(1) != Hkv || kc.size(3) != kD || !vc.sizes().equals(kc.sizes()) ||
        kc.scalar_type() != at::kChar || vc.scalar_type() != at::kChar || ks.scalar_type() != at::kFloat ||
        vs.scalar_type() != at::kFloat || ks.numel() != B * Hkv * N || vs.numel() != B * Hkv * N)
      throw error("int8 decode attention: body must be int8 codes [B, Hkv, N, {}] with fp32 scales [B, Hkv, N]", kD);
    Segment& s = p.seg[p.n_seg++];
    s.k = kc.data_ptr();
    s.v = vc.data_ptr();
    s.ks = ks.data_ptr<float>();
    s.vs = vs.data_ptr<float>();
    s.k_bh = s.v_bh = N * kD;
    s.T = int(N);
    s.is_int8 = 1;
    keep.insert(keep.end(), {kc, vc, ks, vs});
  }
  add_dense(c.k_win, c.v_win, "window keys/values");
  for (int i = 0; i < p.n_seg; ++i) {
    Segment& s = p.seg[i];
    s.tokens_per_split = tokens_per_split(s.T, B * Hkv);
    s.split0 = splits;
    splits += (s.T + s.tokens_per_split - 1) / s.tokens_per_split;
  }
  p.n_splits_total = splits;

  const int64_t n_part = B * Hq * splits, n_out = B * Hq * kD;
  auto ws = at::empty({n_part * (kD + 2) + n_out}, at::TensorOptions().dtype(at::kFloat).device(q.device()));
  float* wsp = ws.data_ptr<float>();
  p.part_o = wsp;
  p.part_m = wsp + n_part * kD;
  p.part_l = wsp + n_part * (kD + 1);
  auto st = at::cuda::getCurrentCUDAStream();
  const dim3 grid(splits, Hkv, B);
  if (dense_type == at::kHalf) launch_nrep<__half>(nrep, grid, p, st);
  else launch_nrep<__nv_bfloat16>(nrep, grid, p, st);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  combine_kernel<kD><<<dim3(B * Hq), kD, 0, st>>>(p.part_o, p.part_m, p.part_l, splits, wsp + n_part * (kD + 2));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return ws.narrow(0, n_part * (kD + 2), n_out).view({B, Hq, kD});
}

}  // namespace kvx::kernels::cuda
