// Where a code lies in the packed words of packed_kv.h: the one definition the CPU reference, the
// CUDA pack/dequantize kernels and the fused attention kernel share. Chosen so that the attention
// kernel makes its tensor-core fragments with one LOP3 per fp16 pair (and a shift per word for the
// codes in the upper byte of the half-words), with no byte permutes:
//   keys                       channels 2j and 2j + 1 sit at the same bit of the low and high
//        half-words (a query pair (2j, 2j + 1) multiplies them as they lie);
//   values (per-token groups)  tokens 2u and 2u + 1 swap half-words (a pair of tokens of one
//        channel is one fp16 pair of the value mma's A operand).
// The word of a code is that of the plain layout at its position: position p in word p / (32/bits)
// of its token's row (values: of its token pair's rows); positions are channels but for permuted
// per-token keys (below).
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define KVX_HD __host__ __device__
#else
#define KVX_HD
#endif

namespace kvx::kernels::layout {

// Plain: code i of a word (channel c, i = c % (32/bits)) at bit i·bits.
KVX_HD constexpr int plain_bit(int c, int bits) { return (c % (32 / bits)) * bits; }

// Keys: pair pw (0 .. 16/bits - 1) of a word takes byte pw % 2 of each half-word, code pw / 2 of that
// byte: pairs 2S and 2S + 1 of a 32-channel chunk (one k-step of the attention kernel's score mma)
// share the code, so one 2^-n of the scaled query serves the k-step.
KVX_HD constexpr int key_pair_code(int pw) { return pw >> 1; }
KVX_HD constexpr int key_pair_bit(int pw, int bits) { return 8 * (pw & 1) + bits * key_pair_code(pw); }
// Bit of channel c's key code in its word.
KVX_HD constexpr int key_bit(int c, int bits) {
  const int i = c % (32 / bits);
  return 16 * (i & 1) + key_pair_bit(i >> 1, bits);
}

// Per-token keys of head_dim 128 are stored channel-permuted: position p = 32t + 4S + j (lane t's
// 32-channel chunk of the attention kernel, k-step S, element j) holds channel 16S + 4t + j, so that
// each k-step of the score mma covers 16 consecutive channels: one per-token group (of 32, 64 or 128)
// whose scale its accumulator takes. Other blocks store channel c at position c.
KVX_HD constexpr bool channels_permuted(bool key_layout, bool per_channel, int64_t D) {
  return key_layout && !per_channel && D == 128;
}
KVX_HD constexpr int permuted_channel(int p) { return 16 * ((p % 32) / 4) + 4 * (p / 32) + p % 4; }  // at position p
KVX_HD constexpr int permuted_position(int c) { return 32 * ((c % 16) / 4) + 4 * (c / 16) + c % 4; }  // of channel c

// Values: half-word h of token 2u + s's plain word is stored as half-word s of row 2u + h; the last
// token of an odd count stays plain.
struct Slot {
  int64_t row;
  int bit;
};
KVX_HD constexpr Slot value_slot(int64_t t, int64_t T, int c, int bits) {
  const int pb = plain_bit(c, bits);
  if ((t | 1) >= T) return {t, pb};
  return {(t & ~int64_t(1)) + pb / 16, 16 * int(t & 1) + pb % 16};
}

// Row and bit of the code at position c of token t (of T) in a block's words: the key layout
// (channel pairs) or the value layout (token pairs).
KVX_HD constexpr Slot code_slot(int64_t t, int64_t T, int c, int bits, bool key_layout) {
  return key_layout ? Slot{t, key_bit(c, bits)} : value_slot(t, T, c, bits);
}

}  // namespace kvx::kernels::layout
