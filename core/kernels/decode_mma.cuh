// Tensor-core building blocks of the fused decode-attention kernels (packed_kv_cuda.cu,
// int8_kv_cuda.cu; internal: included by .cu files only). A block's warps each stream a contiguous
// token range in tiles of 32 tokens; both products run on mma.m16n8k16 (fp16 in, fp32 accumulate):
//   scores  Sᵀ[tok, head] = K[tok, ch]·Qᵀ[ch, head]  (A = keys as fp16 pairs, 16 tokens per mma;
//           B = the query fragments of this lane's heads, rows = the <= 8 query heads of a KV head)
//   output  Oᵀ[ch, head] += V[ch, tok]·Pᵀ[tok, head]  (A = values, B = the probabilities, moved from
//           the score layout by movmatrix)
// Lane (g, t) = (lane / 4, lane % 4) holds the scores of tokens g, g + 8 of each 16 and columns 2t,
// 2t + 1, and the outputs of channels 16g + p (p = 0..15, rows g / g + 8 of mma p / 2) for those
// columns (a kernel may repeat the query rows, see store_split).
// Query rows: a KV head serves `rows` = GQA heads x chunk tokens (head-major: row = head·n + token,
// as q [B, Hq, n, D] lies); a block takes nh <= 8 of them (block_rows), so any GQA ratio and any
// chunk length run, a chunk's rows spread over blockIdx.z. Key channels are paired as the
// codes lie (KeyPair<8> for int8 rows, natural pairs for packed keys: packed_layout.h), the same
// for the keys' A and the query's B. Per-column sums over tokens (the softmax denominators, the
// value biases) run on the tensor cores too (column_total).
#pragma once
#include <cuda_fp16.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>

#include "core/kernels/decode_common.cuh"

namespace kvx::kernels::cuda {

// A full-precision segment: rows [B, Hkv, R, kD] of fp16 or bf16 (bf16 converts to fp16 exactly).
// Token r is visible to a query of chunk token qt when r <= causal_base + qt: R - 1 for segments
// every query sees whole, R - n for one whose last n tokens are the chunk's own. (Outside the unnamed
// namespace, as SplitOutput.)
// In a graph-replayed run (packed_kv.h's StepGrowth) the fields describe step 0 and `step` points
// at the run's step counter: live() moves the segment to the step the kernel runs.
struct DenseSeg {
  const void* k;
  const void* v;
  int64_t k_bh, v_bh;  // elements between consecutive (b, h)
  int R;
  int causal_base;
  bool bf16;
  const int64_t* step;  // nullptr: fixed
  int off_rate, len_rate;
};

namespace {

constexpr int kD = 128;  // head_dim of the fused attention kernels
constexpr int kFastWarps = 4;
constexpr int kFastTile = 32;

// A full-precision token of a tail segment costs about this many quantized ones (4x the bytes of a
// 4-bit token, fp16 fragments that need no conversion): the split sizes leave room for the tail.
constexpr int64_t kTailCost = 4;  // 8 and 12 measured the same or slower (H200, pipelined kernel)

// Tokens per split of a quantized context of T tokens plus `tail` full-precision ones (taken by the
// last split's last warp): about one full wave of `resident` blocks over bh_blocks (b, KV head)
// pairs, >= 2 tiles per warp, a multiple of a block's tile.
inline int split_tokens(int64_t T, int64_t tail, int64_t bh_blocks, int64_t resident) {
  constexpr int64_t unit = kFastWarps * kFastTile;
  T += kTailCost * tail;
  int64_t want = std::max<int64_t>(1, resident / bh_blocks);
  want = std::max<int64_t>(1, std::min<int64_t>(want, T / (2 * unit)));
  const int64_t tps = (T + want - 1) / want;
  return int((tps + unit - 1) / unit * unit);
}

// The segment at the step this launch runs (rows of kD 16-bit elements).
__device__ __forceinline__ DenseSeg live(DenseSeg s) {
  if (s.step) {
    const int d = int(*s.step);
    s.k = static_cast<const uint16_t*>(s.k) + int64_t(s.off_rate) * d * kD;
    s.v = static_cast<const uint16_t*>(s.v) + int64_t(s.off_rate) * d * kD;
    s.R += s.len_rate * d;
    s.causal_base += s.len_rate * d;
  }
  return s;
}

__device__ __forceinline__ uint32_t h2u(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ __half2 u2h(uint32_t u) { return *reinterpret_cast<__half2*>(&u); }

// d += A·B, m16n8k16, row.col, f16 x f16 -> f32.
__device__ __forceinline__ void mma16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// (x & mask) | magic in one LOP3: the magic is a register operand (LOP3 takes one immediate, and
// `(x & imm) | imm` compiles to two).
template <uint32_t MASK>
__device__ __forceinline__ uint32_t and_or(uint32_t x, uint32_t magic) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(x), "n"(MASK), "r"(magic));
  return r;
}

// Transpose of an 8x8 fp16 matrix held one row pair per lane (lane 4r + c holds row r, columns 2c, 2c + 1).
__device__ __forceinline__ uint32_t transpose8x8(uint32_t x) {
  uint32_t r;
  asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(r) : "r"(x));
  return r;
}

// N words at p (16-byte aligned for N >= 4, 8 for N = 2): from global memory through the read-only
// cache (GLOBAL), or from shared memory.
template <bool GLOBAL, int N>
__device__ __forceinline__ void load_words(const uint32_t* p, uint32_t (&w)[N]) {
  auto load = [](const auto* x) {
    if constexpr (GLOBAL) return __ldg(x);
    else return *x;
  };
  if constexpr (N == 1) {
    w[0] = load(p);
  } else if constexpr (N == 2) {
    const uint2 v = load(reinterpret_cast<const uint2*>(p));
    w[0] = v.x;
    w[1] = v.y;
  } else {
#pragma unroll
    for (int i = 0; i < N / 4; ++i) {
      const uint4 v = load(reinterpret_cast<const uint4*>(p) + i);
      w[4 * i] = v.x;
      w[4 * i + 1] = v.y;
      w[4 * i + 2] = v.z;
      w[4 * i + 3] = v.w;
    }
  }
}
template <int N>
__device__ __forceinline__ void ldg_words(const uint32_t* p, uint32_t (&w)[N]) {
  load_words<true>(p, w);
}
template <int N>
__device__ __forceinline__ void lds_words(const uint32_t* p, uint32_t (&w)[N]) {
  load_words<false>(p, w);
}

// 16 bytes global -> shared without registers (L2 only: the cache is streamed once), where `on`
// holds: a predicated copy, no branch.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool on) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %2, 0;\n @p cp.async.cg.shared.global [%0], [%1], 16;\n}\n" ::"r"(dst),
      "l"(src), "r"(int(on)));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N of this thread's groups are in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Pair p (0..15) of a lane's 32-channel chunk of codes in the plain layout (B words): half2 of codes
// from bytes (v, v + 2) of word p / (16/B), code k of the byte; channels relative to the chunk
// start. The int8 kernel's pairing (B = 8).
template <int B>
struct KeyPair {
  static constexpr int PPW = 16 / B, CPB = 8 / B;
  __host__ __device__ static constexpr int word(int p) { return p / PPW; }
  __host__ __device__ static constexpr int src(int p) { return (p % PPW) / CPB; }
  __host__ __device__ static constexpr int code(int p) { return (p % PPW) % CPB; }
  __host__ __device__ static constexpr int lo(int p) { return word(p) * (32 / B) + src(p) * CPB + code(p); }
  __host__ __device__ static constexpr int hi(int p) { return word(p) * (32 / B) + (2 + src(p)) * CPB + code(p); }
};
// Pair p of consecutive channels (2p, 2p + 1): fp16 rows and stats as they lie in memory.
struct NaturalPair {
  __host__ __device__ static constexpr int lo(int p) { return 2 * p; }
  __host__ __device__ static constexpr int hi(int p) { return 2 * p + 1; }
};

// A lane's 16 query pairs sit in its row of QueryFragments in quad order (pairs 4i, 4i+2, 4i+1, 4i+3
// in words 4i..4i+3): a 16-byte load is then the A fragment of a column product over the lane's
// query (rows g: pairs 4i, 4i+1; rows g+8: 4i+2, 4i+3; the packed kernel's group constants), with no
// register moves. Rows are 20 words: the 16-byte loads of 8 lanes (rows 80 bytes apart) fall in 8
// different bank quads, at offsets from one address register.
__host__ __device__ constexpr int quad_order(int j) { return (j & ~3) | ((j & 1) << 1) | ((j >> 1) & 1); }
constexpr int kQueryRow = 20;
using QueryFragments = uint32_t[32][kQueryRow];

// Whether pairs 2w and 2w + 1 of the pairing KP take channels 4w + (those of pairs 0 and 1, all
// within 0..3): a quad of query channels then fills both, the same way for every quad.
template <class KP>
__host__ __device__ constexpr bool pairs_repeat_per_quad() {
  for (int w = 0; w < 8; ++w)
    for (int pl = 0; pl < 2; ++pl)
      if (KP::lo(pl) > 3 || KP::hi(pl) > 3 || KP::lo(2 * w + pl) != 4 * w + KP::lo(pl) ||
          KP::hi(2 * w + pl) != 4 * w + KP::hi(pl))
        return false;
  return true;
}

// The query rows of a block: blockIdx.z = b·qgroups + qg, blockIdx.y = the KV head; the block takes
// rows qg·nh .. qg·nh + nvalid - 1 of the KV head's `rows`. row0: the global index of its first row
// in q viewed as [B·Hkv·rows, kD] (also the row of the output). chunk: tokens per query head, so
// that row r is token r % chunk of the chunk.
struct BlockRows {
  int b, nvalid, qrow0;  // qrow0: the first row within the KV head's rows
  int64_t row0;
};
__device__ __forceinline__ BlockRows block_rows(int Hkv, int rows, int qgroups, int nh) {
  const int qg = blockIdx.z % qgroups, b = blockIdx.z / qgroups;
  BlockRows r;
  r.b = b;
  r.qrow0 = qg * nh;
  r.nvalid = min(nh, rows - r.qrow0);
  r.row0 = (int64_t(b) * Hkv + blockIdx.y) * rows + r.qrow0;
  return r;
}
// The chunk token of this lane's columns 2t, 2t + 1 (column c is row c % nh of the block).
__device__ __forceinline__ void column_tokens(const BlockRows& br, int nh, int chunk, int (&qt)[2]) {
  const int t = (threadIdx.x % 32) & 3;
#pragma unroll
  for (int h = 0; h < 2; ++h) qt[h] = (br.qrow0 + (2 * t + h) % nh) % chunk;
}

// The query B fragments of every lane into shared memory: pair pp of lane (g, t) = half2(q[r][32t +
// lo], q[r][32t + hi]) for pair pp of the pairing KP (NaturalPair or KeyPair<8>), with column g
// holding row r = g % nh of the block (nh = 8, or fewer when the columns repeat the rows once per
// value group), zeros for rows past nvalid; into *scaled too (if given), times pair_scale(pp) (a
// power of 2). q: rows of kD elements from element row0·kD on. A thread takes a quad of channels of
// one column (its pairs 2w, 2w + 1). Ends with a barrier.
struct UnitPairScale {
  __device__ float operator()(int) const { return 1.f; }
};
// scaled_permuted: the scaled fragments take the channels of permuted per-token keys (packed_layout.h:
// position quad·4 + j holds channel 16·(quad % 8) + 4·(quad / 8) + j).
template <class KP, class PairScale = UnitPairScale>
__device__ __forceinline__ void stage_query(QueryFragments& qf_s, const void* q, int q_type, int64_t row0, int nvalid,
                                            int nh, QueryFragments* scaled = nullptr, PairScale pair_scale = {},
                                            bool scaled_permuted = false) {
  static_assert(pairs_repeat_per_quad<KP>(), "stage_query reads the query a channel quad at a time");
  for (int i = threadIdx.x; i < 8 * kD / 4; i += blockDim.x) {
    const int g = i / (kD / 4), quad = i % (kD / 4), hh = g % nh, ln = 4 * g + quad / 8, w = quad % 8;
    float x[4] = {0.f, 0.f, 0.f, 0.f}, xs[4] = {0.f, 0.f, 0.f, 0.f};
    if (hh < nvalid) {
      load_q_run(q, q_type, (row0 + hh) * kD + 4 * quad, x);
      if (scaled && scaled_permuted) load_q_run(q, q_type, (row0 + hh) * kD + 16 * (quad % 8) + 4 * (quad / 8), xs);
    }
    if (!scaled_permuted)
#pragma unroll
      for (int j = 0; j < 4; ++j) xs[j] = x[j];
#pragma unroll
    for (int pl = 0; pl < 2; ++pl) {
      const int pp = 2 * w + pl;
      qf_s[ln][quad_order(pp)] = h2u(__floats2half2_rn(x[KP::lo(pl)], x[KP::hi(pl)]));
      if (scaled) {
        const float f = pair_scale(pp);
        (*scaled)[ln][quad_order(pp)] = h2u(__floats2half2_rn(xs[KP::lo(pl)] * f, xs[KP::hi(pl)] * f));
      }
    }
  }
  __syncthreads();
}

// This lane's query fragments from stage_query's rows (qf[2S], qf[2S + 1]: k-step S).
__device__ __forceinline__ void load_query(const QueryFragments& qf_s, uint32_t (&qf)[16]) {
  const uint32_t* row = qf_s[threadIdx.x % 32];
#pragma unroll
  for (int c = 0; c < 4; ++c) {  // chunk c of quad order: pairs 4c, 4c + 2, 4c + 1, 4c + 3
    const uint4 x = *reinterpret_cast<const uint4*>(row + 4 * c);
    qf[4 * c] = x.x;
    qf[4 * c + 2] = x.y;
    qf[4 * c + 1] = x.z;
    qf[4 * c + 3] = x.w;
  }
}

// half2 (h[lo], h[hi]) of an array of fp16 pairs.
template <int LO, int HI>
__device__ __forceinline__ uint32_t half_pair(const uint32_t (&w)[16]) {
  constexpr uint32_t sel = (2 * (LO & 1)) | ((2 * (LO & 1) + 1) << 4) | ((4 + 2 * (HI & 1)) << 8) | ((5 + 2 * (HI & 1)) << 12);
  return __byte_perm(w[LO / 2], w[HI / 2], sel);
}

__device__ __forceinline__ uint32_t bf16x2_to_f16x2(uint32_t w) {
  return h2u(__floats2half2_rn(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u)));
}

// Channels ch0.. of token `tok` as N fp16-pair words; zeros past the segment's end (their
// probabilities are 0, and 0·garbage could be NaN).
template <int N>
__device__ __forceinline__ void dense_row(const void* base, int64_t bh_off, int tok, int R, bool bf16, int ch0,
                                          uint32_t (&w)[N]) {
  if (tok >= R) {
#pragma unroll
    for (int i = 0; i < N; ++i) w[i] = 0u;
    return;
  }
  ldg_words(reinterpret_cast<const uint32_t*>(static_cast<const uint16_t*>(base) + bh_off + int64_t(tok) * kD + ch0), w);
  if (bf16)
#pragma unroll
    for (int i = 0; i < N; ++i) w[i] = bf16x2_to_f16x2(w[i]);
}

constexpr uint32_t kOnex2 = 0x3C003C00u;

// 2^x in one MUFU (exp2f adds denormal handling; results below 2^-126 flush to 0, as -inf does).
__device__ __forceinline__ float fast_exp2(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
  return r;
}

// Per-column sums over tokens on the tensor cores. A B fragment of column g (tokens 2t.., 2t+8..
// of 16) is also the A fragment of row g or g + 8, so against B = ones one mma adds the four
// fragments f0..f3 (two 16-token steps) of each column into rows g and g + 8: the column's sum is
// d[0] + d[2]. The fragments enter as the pairs they are in the value mma (no register moves).
__device__ __forceinline__ void column_total(float (&d)[4], uint32_t f0, uint32_t f1, uint32_t f2, uint32_t f3) {
  mma16816(d, f0, f1, f2, f3, kOnex2, kOnex2);
}
// Per-column sums over tokens of P times a per-token weight w, in one mma (the fragments as in
// column_total): B column n holds w of the tokens of rows g if n is even, of rows g + 8 if odd, so
// D[g][n] + D[g + 8][n + 1] (n even) is column g's sum: x[0] + x[3] of the lanes t (the split
// layout). w0, w1: w of the tokens of b0 and b1 for this lane's B column (g: the rows by g % 2).
__device__ __forceinline__ void weighted_column_total(float (&d)[4], uint32_t f0, uint32_t f1, uint32_t f2, uint32_t f3,
                                                      uint32_t w0, uint32_t w1) {
  mma16816(d, f0, f1, f2, f3, w0, w1);
}
// Running column sums of a warp: l = Σ P (the softmax denominators, from the same fp16 P the
// products use; column_total layout); with the value scale on P (FOLD), s = Σ P·scale for the int8
// kernel's code bias (column_total layout) and m = Σ P·min for the packed kernel (split layout).
struct ColumnSums {
  float l[4] = {0.f, 0.f, 0.f, 0.f}, s[4] = {0.f, 0.f, 0.f, 0.f}, m[4] = {0.f, 0.f, 0.f, 0.f};
};
// Sum x (column_total layout, x[0] + x[2] of column g) of column c, as the lanes holding it see it.
__device__ __forceinline__ float column_value(const float (&x)[4], int c) {
  return __shfl_sync(kFullMask, x[0] + x[2], 4 * c);
}
// The same for the split layout (x[0] + x[3]), where the B columns' w depends on the column's value
// group (columns of nh heads per group): from the lane t whose columns 2t, 2t + 1 are of c's group.
__device__ __forceinline__ float split_column_value(const float (&x)[4], int c, int nh) {
  return __shfl_sync(kFullMask, x[0] + x[3], 4 * c + c / nh * (nh / 2));
}

// The running max of a column may trail its scores by this much (log2 domain), so that a tile within
// it skips the max reduction across lanes and the rescale. Probabilities stay <= 16: times a value
// scale (FOLD) still far inside fp16.
constexpr float kMaxSlack = 4.f;

// Online softmax over a tile's scores Sᵀ in the log2 domain, score = d·scale + off[column] (scale >
// 0): d[bb][e] is token 16bb + g (e < 2) or 16bb + 8 + g (e >= 2), column 2t + (e & 1); the 8 lanes
// with the same t hold a column's 32 tokens. The running max m_run moves (to the column's max) only
// when some score exceeds it by more than kMaxSlack; every tile holds valid tokens, so the first
// one sets it, and exp2(-inf) = 0 resets. Returns P = 2^(score - m_run) as the value mma's B
// fragments (transposed per 8x8 block) and adds it to cs.l; the column sums (cs.s, cs.m too with
// FOLD) rescale with the outputs.
// Masked scores are -inf; a column whose every score so far was masked keeps m_run = -inf, and
// its offsets stay finite (off + FLT_MAX) so that P = 2^-inf = 0, never NaN (a warp's range may lie
// past a chunk query's own token).
template <bool FOLD>
__device__ __forceinline__ void online_softmax(const float (&d)[2][4], float scale, const float (&off)[2],
                                               uint32_t (&pb)[4], float (&m_run)[2], ColumnSums& cs,
                                               float (&acc)[8][4]) {
  float mx[2], o[2];  // the lane's raw max per column; exponent offsets off - m_run
  bool over = false;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    mx[h] = fmaxf(fmaxf(d[0][h], d[0][h + 2]), fmaxf(d[1][h], d[1][h + 2]));
    o[h] = off[h] - fmaxf(m_run[h], -FLT_MAX);
    over |= fmaf(mx[h], scale, o[h]) > kMaxSlack;  // before the first valid score: FLT_MAX
  }
  if (__any_sync(kFullMask, over)) {
    float corr[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float tmax = fmaf(mx[h], scale, off[h]);
#pragma unroll
      for (int i = 4; i < 32; i <<= 1) tmax = fmaxf(tmax, __shfl_xor_sync(kFullMask, tmax, i));
      const float m_new = fmaxf(m_run[h], tmax);
      corr[h] = m_new == -INFINITY ? 1.f : fast_exp2(m_run[h] - m_new);
      m_run[h] = m_new;
      o[h] = off[h] - fmaxf(m_new, -FLT_MAX);
    }
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[j][e] *= corr[e & 1];
    // column g's factor sits in lanes t = g / 2, element g % 2
    const int g = (threadIdx.x % 32) >> 2;
    const float c0 = __shfl_sync(kFullMask, corr[0], g >> 1), c1 = __shfl_sync(kFullMask, corr[1], g >> 1);
    const float cg = g & 1 ? c1 : c0;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      cs.l[e] *= cg;
      if constexpr (FOLD) {
        cs.s[e] *= cg;
        cs.m[e] *= cg;
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int bb = i / 2, e = 2 * (i % 2);
    pb[i] = transpose8x8(h2u(__floats2half2_rn(fast_exp2(fmaf(d[bb][e], scale, o[0])), fast_exp2(fmaf(d[bb][e + 1], scale, o[1])))));
  }
  column_total(cs.l, pb[0], pb[1], pb[2], pb[3]);
}

// One 32-token tile r0.. of a full-precision segment, against the query fragments qf (paired as
// KP says): scores, online softmax and values into the running state. qt: the chunk tokens of the
// lane's columns (column_tokens), for the segment's causal limit.
template <class KP, bool FOLD>
__device__ __forceinline__ void attend_dense_tile(const DenseSeg& sg, int64_t bh, int r0, const uint32_t (&qf)[16],
                                                  const int (&qt)[2], float scale_log2, float (&m_run)[2],
                                                  ColumnSums& cs, float (&acc)[8][4]) {
  const int lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int64_t k_off = bh * sg.k_bh, v_off = bh * sg.v_bh;
  const int lim[2] = {min(sg.R - 1, sg.causal_base + qt[0]), min(sg.R - 1, sg.causal_base + qt[1])};
  float s[2][4];  // raw q·k, -inf past the segment's end and the column's causal limit
#pragma unroll
  for (int bb = 0; bb < 2; ++bb) {
    uint32_t k0[16], k1[16];  // tokens r0 + 16bb + g and + 8, channels 32t..32t+31
    dense_row(sg.k, k_off, r0 + 16 * bb + g, sg.R, sg.bf16, 32 * t, k0);
    dense_row(sg.k, k_off, r0 + 16 * bb + 8 + g, sg.R, sg.bf16, 32 * t, k1);
    float d[4] = {0.f, 0.f, 0.f, 0.f};
#define KVX_RSTEP(S)                                                                                      \
  mma16816(d, half_pair<KP::lo(2 * S), KP::hi(2 * S)>(k0), half_pair<KP::lo(2 * S), KP::hi(2 * S)>(k1),   \
           half_pair<KP::lo(2 * S + 1), KP::hi(2 * S + 1)>(k0), half_pair<KP::lo(2 * S + 1), KP::hi(2 * S + 1)>(k1), \
           qf[2 * S], qf[2 * S + 1]);
    KVX_RSTEP(0) KVX_RSTEP(1) KVX_RSTEP(2) KVX_RSTEP(3) KVX_RSTEP(4) KVX_RSTEP(5) KVX_RSTEP(6) KVX_RSTEP(7)
#undef KVX_RSTEP
#pragma unroll
    for (int e = 0; e < 4; ++e) s[bb][e] = r0 + 16 * bb + g + 8 * (e >> 1) <= lim[e & 1] ? d[e] : -INFINITY;
  }
  uint32_t pb[4];
  const float no_offset[2] = {0.f, 0.f};
  online_softmax<FOLD>(s, scale_log2, no_offset, pb, m_run, cs, acc);
#pragma unroll
  for (int v = 0; v < 2; ++v) {
    uint32_t w[4][8];  // tokens r0 + 16v + 2t + {0, 1, 8, 9}, channels 16g..16g+15
#pragma unroll
    for (int i = 0; i < 4; ++i) dense_row(sg.v, v_off, r0 + 16 * v + 2 * t + (i & 1) + 8 * (i >> 1), sg.R, sg.bf16, 16 * g, w[i]);
    uint32_t x01[16], x89[16];  // channel 16g + p of the two tokens
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      x01[2 * i] = __byte_perm(w[0][i], w[1][i], 0x5410);
      x01[2 * i + 1] = __byte_perm(w[0][i], w[1][i], 0x7632);
      x89[2 * i] = __byte_perm(w[2][i], w[3][i], 0x5410);
      x89[2 * i + 1] = __byte_perm(w[2][i], w[3][i], 0x7632);
    }
#pragma unroll
    for (int j = 0; j < 8; ++j)
      mma16816(acc[j], x01[2 * j], x01[2 * j + 1], x89[2 * j], x89[2 * j + 1], pb[2 * v], pb[2 * v + 1]);
  }
}

// Shared memory of the block merge (16-byte aligned: the merge reads float4s of o).
struct alignas(16) SplitMerge {
  float m[kFastWarps][8], l[kFastWarps][8];
  float o[kFastWarps][8][kD];
};

// Merges the block's warps and writes split `split` of the partials (out) for the block's nrep
// query rows, global rows row0 .. row0 + nrep - 1. Column c of the accumulators is row c % nh,
// valid for the channels of group c / nh (16g / (kD·nh/8) for lane g; nh = 8: one group). Every
// thread of the block calls it.
__device__ __forceinline__ void store_split(SplitMerge& sm, const float (&m_run)[2], const ColumnSums& cs, const float (&acc)[8][4],
                                            int nrep, int nh, int64_t row0, int split, const SplitOutput& out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  bool ok[2];
  int head[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int col = 2 * t + h;
    const float l = column_value(cs.l, col);
    head[h] = col % nh;
    ok[h] = head[h] < nrep && col / nh == g / nh;
    if (g == 0 && ok[h]) {
      sm.m[warp][head[h]] = m_run[h];
      sm.l[warp][head[h]] = l;
    }
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int c = 16 * g + 2 * j;
#pragma unroll
    for (int h = 0; h < 2; ++h)
      if (ok[h]) {
        sm.o[warp][head[h]][c] = acc[j][h];
        sm.o[warp][head[h]][c + 1] = acc[j][2 + h];
      }
  }
  __syncthreads();
  // a thread merges a quad of channels of one head: the warps' factors once per quad, float4 moves
  constexpr int kQuads = kD / 4;
  for (int i = threadIdx.x; i < nrep * kQuads; i += blockDim.x) {
    const int h = i / kQuads, d = 4 * (i % kQuads);
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kFastWarps; ++w) M = fmaxf(M, sm.m[w][h]);
    float L = 0.f;
    float4 O = make_float4(0.f, 0.f, 0.f, 0.f);
    if (M != -INFINITY)
#pragma unroll
      for (int w = 0; w < kFastWarps; ++w) {
        const float f = exp2f(sm.m[w][h] - M);
        const float4 o = *reinterpret_cast<const float4*>(&sm.o[w][h][d]);
        L += sm.l[w][h] * f;
        O.x += o.x * f;
        O.y += o.y * f;
        O.z += o.z * f;
        O.w += o.w * f;
      }
    const int64_t slot = (row0 + h) * out.n_splits + split;
    *reinterpret_cast<float4*>(out.part_o + slot * kD + d) = O;
    if (d == 0) {
      out.part_m[slot] = M;
      out.part_l[slot] = L;
    }
  }
}

}  // namespace
}  // namespace kvx::kernels::cuda
