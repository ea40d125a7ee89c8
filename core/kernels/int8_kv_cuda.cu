// CUDA kernels of int8_kv.h. The CPU reference (int8_kv_ref.cpp) defines the numbers; the tests in
// tests/kernels compare the two per GQA ratio, odd length and sink/window size.
//
// Decode attention on the tensor cores (decode_mma.cuh): the int8 body is split over the blocks;
// sinks and window (fp16/bf16) run on the last split's last warp, whose body share the split sizes
// shorten to make room; combine_kernel merges the splits (log-sum-exp). A signed code becomes fp16
// with one LOP3: (byte ^ 0x80) under the exponent byte 0x64 reads as 1152 + code exactly. The bias
// leaves the token loop: keys, Σ_c q_c·1152 per head (an mma against a constant, once); values, the
// per-token scale multiplies the probabilities (B'' = P·s) and one mma per 16 tokens sums B'' for
// the 1152·Σ B'' taken out at the end. The per-token key scale multiplies the score.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>

#include "core/common/error.h"
#include "core/kernels/int8_kv.h"
#include "core/kernels/split_launch.cuh"

namespace kvx::kernels::cuda {
namespace {

constexpr uint32_t kS8Magic = 0x64806480u;   // exponent byte 0x64 over a byte whose sign bit flips
constexpr uint32_t kNeg1152x2 = 0xE480E480u;
constexpr float kS8Bias = 1152.f;

// Bytes 0 and 2 of y (signed codes) as the fp16 pair 1152 + code: LOP3 (y & 0x00ff00ff) ^ (magic
// in the masked bits) | (magic elsewhere), one instruction with the magic in a register.
__device__ __forceinline__ uint32_t s8_pair(uint32_t y) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0x6A;\n" : "=r"(r) : "r"(y), "n"(0x00FF00FF), "r"(kS8Magic));
  return r;
}

struct Int8MmaParams {
  const void* q;  // rows [B·Hkv·rows, kD], dtype q_type (see load_q_run)
  int q_type;
  int Hkv, rows, qgroups, chunk;  // as PackedParams (packed_attention.cuh)
  const uint32_t* k;  // body codes int8 [B, Hkv, N, kD] (as words), k_bh words between (b, h)
  const uint32_t* v;
  int64_t k_bh, v_bh;
  const float* ks;    // per-token scales [B, Hkv, N], ks_bh between (b, h)
  const float* vs;
  int64_t ks_bh, vs_bh;
  int N;
  const int64_t* n_step;  // a graph-replayed run's body (StepGrowth): N + n_rate·d tokens at step d
  int n_rate;
  DenseSeg tail[2];   // sinks, then the window with the chunk's own tokens (R = 0: absent)
  int tokens_per_split;  // multiple of kFastWarps·kFastTile
  float scale_log2;
  SplitOutput out;
};

__global__ void __launch_bounds__(kFastWarps * 32, 4) int8_mma_kernel(const Int8MmaParams p) {
  allow_dependent_launch();
  constexpr int KROW = 32, VROW = 32;  // words per int8 row
  using KP = KeyPair<8>;
  __shared__ __align__(16) QueryFragments qf_s;
  __shared__ SplitMerge merge;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int64_t bh = int64_t(blockIdx.z / p.qgroups) * p.Hkv + blockIdx.y;
  {
    const BlockRows br = block_rows(p.Hkv, p.rows, p.qgroups, 8);
    stage_query<KP>(qf_s, p.q, p.q_type, br.row0, br.nvalid, 8);
  }
  uint32_t qf[16];
  load_query(qf_s, qf);
  // -1152·Σ_c q_c per head (columns 2t, 2t + 1), with the fp16 q the scores use
  float cq[2];
  {
    float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int S = 0; S < 8; ++S) mma16816(d, kNeg1152x2, kNeg1152x2, kNeg1152x2, kNeg1152x2, qf[2 * S], qf[2 * S + 1]);
    cq[0] = d[0];
    cq[1] = d[1];
  }

  float m_run[2] = {-INFINITY, -INFINITY}, acc[8][4];
  ColumnSums cs;  // .s: Σ P·scale
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;

  const int tpw = p.tokens_per_split / kFastWarps;
  const int wb = blockIdx.x * p.tokens_per_split + warp * tpw;
  const int N = p.n_step ? p.N + p.n_rate * int(*p.n_step) : p.N;
  const int we = min(N, wb + tpw);
  const int last = N - 1;  // rows past the body's end read its last row (masked, finite)
  const uint32_t* kslab = p.k + bh * p.k_bh;
  const uint32_t* vslab = p.v + bh * p.v_bh;
  const float* ksl = p.ks + bh * p.ks_bh;
  const float* vsl = p.vs + bh * p.vs_bh;

  for (int t0 = wb; t0 < we; t0 += kFastTile) {
    uint32_t kw[4][8];  // token t0 + 8blk + g, channels 32t..32t+31
    float ksc[2][2];    // key scale of tokens t0 + 16bb + g + 8e
#pragma unroll
    for (int blk = 0; blk < 4; ++blk) {
      const int tok = min(t0 + 8 * blk + g, last);
      ldg_words(kslab + int64_t(tok) * KROW + 8 * t, kw[blk]);
      ksc[blk / 2][blk % 2] = __ldg(ksl + tok) * p.scale_log2;
    }
    uint32_t vw[2][4][4];  // tokens t0 + 16v + 2t + {0, 1, 8, 9}, channels 16g..16g+15
    uint32_t vs2[2][2];    // their scales as fp16 pairs
#pragma unroll
    for (int v = 0; v < 2; ++v) {
#pragma unroll
      for (int i = 0; i < 4; ++i)
        ldg_words(vslab + int64_t(min(t0 + 16 * v + 2 * t + (i & 1) + 8 * (i >> 1), last)) * VROW + 4 * g, vw[v][i]);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int tok = t0 + 16 * v + 8 * h + 2 * t;
        vs2[v][h] = h2u(__floats2half2_rn(__ldg(vsl + min(tok, last)), __ldg(vsl + min(tok + 1, last))));
      }
    }
    // ---- scores: (Σ q·(1152 + x) - 1152·Σ q)·key scale
    float s[2][4];
#pragma unroll
    for (int bb = 0; bb < 2; ++bb) {
      float d[4] = {0.f, 0.f, 0.f, 0.f};
#define KVX_KSTEP(S)                                                                                  \
  {                                                                                                   \
    const uint32_t w0 = kw[2 * bb][KP::word(2 * S)], w1 = kw[2 * bb + 1][KP::word(2 * S)];           \
    const uint32_t x0 = KP::src(2 * S) ? w0 >> 8 : w0, x1 = KP::src(2 * S) ? w1 >> 8 : w1;             \
    const uint32_t y0 = kw[2 * bb][KP::word(2 * S + 1)], y1 = kw[2 * bb + 1][KP::word(2 * S + 1)];    \
    const uint32_t z0 = KP::src(2 * S + 1) ? y0 >> 8 : y0, z1 = KP::src(2 * S + 1) ? y1 >> 8 : y1;     \
    mma16816(d, s8_pair(x0), s8_pair(x1), s8_pair(z0), s8_pair(z1), qf[2 * S], qf[2 * S + 1]);       \
  }
      KVX_KSTEP(0) KVX_KSTEP(1) KVX_KSTEP(2) KVX_KSTEP(3) KVX_KSTEP(4) KVX_KSTEP(5) KVX_KSTEP(6) KVX_KSTEP(7)
#undef KVX_KSTEP
#pragma unroll
      for (int e = 0; e < 4; ++e) s[bb][e] = (d[e] + cq[e & 1]) * ksc[bb][e >> 1];
    }
    if (t0 + kFastTile > we)  // the body's last tile
#pragma unroll
      for (int bb = 0; bb < 2; ++bb)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (t0 + 16 * bb + g + 8 * (e >> 1) >= we) s[bb][e] = -INFINITY;
    uint32_t pb[4];
    const float no_offset[2] = {0.f, 0.f};  // s is the score: the key scale varies per token
    online_softmax<true>(s, 1.f, no_offset, pb, m_run, cs, acc);
    // ---- values: A = 1152 + code, B = P·scale; Σ B for the bias
#pragma unroll
    for (int i = 0; i < 4; ++i) pb[i] = h2u(__hmul2(u2h(pb[i]), u2h(vs2[i / 2][i % 2])));
    column_total(cs.s, pb[0], pb[1], pb[2], pb[3]);
#pragma unroll
    for (int v = 0; v < 2; ++v) {
      const uint32_t b0 = pb[2 * v], b1 = pb[2 * v + 1];
      uint32_t x01[16], x89[16];  // channel 16g + 4wi + be of the token pairs
#pragma unroll
      for (int wi = 0; wi < 4; ++wi)
#pragma unroll
        for (int be = 0; be < 4; ++be) {
          const uint32_t sel = uint32_t(be | (be << 4) | ((4 + be) << 8) | ((4 + be) << 12));
          x01[4 * wi + be] = s8_pair(__byte_perm(vw[v][0][wi], vw[v][1][wi], sel));
          x89[4 * wi + be] = s8_pair(__byte_perm(vw[v][2][wi], vw[v][3][wi], sel));
        }
#pragma unroll
      for (int j = 0; j < 8; ++j) mma16816(acc[j], x01[2 * j], x01[2 * j + 1], x89[2 * j], x89[2 * j + 1], b0, b1);
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float sum = column_value(cs.s, 2 * t + h);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      acc[j][h] -= kS8Bias * sum;
      acc[j][2 + h] -= kS8Bias * sum;
    }
  }

  // the block's rows again (kept across the token loop they cost spills; recomputing is cheap)
  const BlockRows br = block_rows(p.Hkv, p.rows, p.qgroups, 8);
  if (blockIdx.x == gridDim.x - 1 && warp == kFastWarps - 1) {
    int qt[2];
    column_tokens(br, 8, p.chunk, qt);
#pragma unroll
    for (int sgi = 0; sgi < 2; ++sgi) {
      const DenseSeg sg = live(p.tail[sgi]);
      for (int r0 = 0; r0 < sg.R; r0 += kFastTile)
        attend_dense_tile<KP, true>(sg, bh, r0, qf, qt, p.scale_log2, m_run, cs, acc);
    }
  }
  store_split(merge, m_run, cs, acc, br.nvalid, 8, br.row0, blockIdx.x, p.out);
}

// An int8 body tensor as the kernel reads it: rows (the last dim) contiguous, (b, h) planes at one
// stride; codes rows of kD bytes, 16-byte aligned.
void check_body(const at::Tensor& x, int64_t B, int64_t Hkv, int64_t N, bool codes, const char* what) {
  const bool ok = x.dim() == (codes ? 4 : 3) && x.size(0) == B && x.size(1) == Hkv && x.size(2) == N &&
                  x.stride(x.dim() - 1) == 1 && x.stride(0) == x.size(1) * x.stride(1) &&
                  (!codes || (x.size(3) == kD && x.stride(2) == kD && reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0)) &&
                  x.scalar_type() == (codes ? at::kChar : at::kFloat);
  if (!ok)
    throw error("int8 attention: {} must be {} [{}, {}, {}{}] with contiguous rows", what, codes ? "int8" : "fp32", B, Hkv,
                N, codes ? ", 128" : "");
}

}  // namespace

at::Tensor int8_attention(const at::Tensor& q, const Int8Rows* k, const Int8Rows* v, const FpSegment& sink,
                          const FpSegment& tail, double scale) {
  const c10::cuda::CUDAGuard guard(q.device());
  // a graph-replayed run's body grows: the splits cover its last step
  const int64_t N = k ? k->tokens() : 0, N_max = k ? k->max_tokens() : 0;
  const int64_t Hkv = cache_kv_heads(N_max > 0 ? k->codes.size(1) : 0, sink, tail, q.dim() == 4 ? q.size(2) : 0, "int8 attention");
  const RowGrid rg = row_grid(q, Hkv, 8, "int8 attention");
  const int64_t B = rg.B, n = rg.n;
  const QueryRef qr = query_ref(q);
  Int8MmaParams p{};
  p.q = qr.q.data_ptr();
  p.q_type = qr.type;
  p.Hkv = int(Hkv);
  p.rows = rg.rows;
  p.qgroups = rg.qgroups;
  p.chunk = int(n);
  p.scale_log2 = float(scale * 1.4426950408889634);
  p.tail[0] = dense_seg(sink, B, Hkv, 0, "sink keys/values");
  p.tail[1] = dense_seg(tail, B, Hkv, int(n), "window keys/values");
  if (p.tail[0].R > 0 && p.tail[1].R > 0 && p.tail[0].bf16 != p.tail[1].bf16)
    throw error("int8 attention: sinks and window must share one dtype");
  if (N_max > 0) {
    check_body(k->codes, B, Hkv, N, true, "key codes");
    check_body(v->codes, B, Hkv, N, true, "value codes");
    check_body(k->scale, B, Hkv, N, false, "key scales");
    check_body(v->scale, B, Hkv, N, false, "value scales");
    p.k = reinterpret_cast<const uint32_t*>(k->codes.data_ptr());
    p.v = reinterpret_cast<const uint32_t*>(v->codes.data_ptr());
    p.k_bh = k->codes.stride(1) / 4;
    p.v_bh = v->codes.stride(1) / 4;
    p.ks = k->scale.data_ptr<float>();
    p.vs = v->scale.data_ptr<float>();
    p.ks_bh = k->scale.stride(1);
    p.vs_bh = v->scale.stride(1);
    p.N = int(N);
    p.n_step = k->grow.step;
    p.n_rate = int(k->grow.len_rate);
  }
  // no body: one split, whose last warp takes sinks and window
  const int64_t fp_tokens = sink.max_tokens() + tail.max_tokens();
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  p.tokens_per_split = N_max > 0 ? split_tokens(N_max, fp_tokens, rg.blocks_per_split(), int64_t(sms) * resident_blocks(int8_mma_kernel, 0))
                                 : kFastWarps * kFastTile;
  const int splits = N_max > 0 ? int((N_max + p.tokens_per_split - 1) / p.tokens_per_split) : 1;
  return launch_split_k(int8_mma_kernel, p, rg, splits, 0, q.device(), at::cuda::getCurrentCUDAStream());
}

}  // namespace kvx::kernels::cuda
