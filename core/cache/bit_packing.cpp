#include "core/cache/bit_packing.h"

#include <cstring>

#include "core/common/error.h"

namespace kvx {
namespace {

// b ∈ {1, 2, 4}: 8/b codes per byte, never straddling a byte.
template <int B>
void pack_small(const uint8_t* c, int64_t n, uint8_t* out) {
  constexpr int per = 8 / B;
  constexpr uint8_t mask = (1u << B) - 1;
  const int64_t full = n / per;
  for (int64_t j = 0; j < full; ++j) {
    uint8_t v = 0;
    for (int k = 0; k < per; ++k) v |= uint8_t((c[j * per + k] & mask) << (k * B));
    out[j] = v;
  }
  if (full * per < n) {
    uint8_t v = 0;
    for (int64_t i = full * per; i < n; ++i) v |= uint8_t((c[i] & mask) << ((i - full * per) * B));
    out[full] = v;
  }
}

template <int B>
void unpack_small_aligned(const uint8_t* p, int64_t n, uint8_t* c) {
  constexpr int per = 8 / B;
  constexpr uint8_t mask = (1u << B) - 1;
  const int64_t full = n / per;
  for (int64_t j = 0; j < full; ++j)
    for (int k = 0; k < per; ++k) c[j * per + k] = (p[j] >> (k * B)) & mask;
  for (int64_t i = full * per; i < n; ++i) c[i] = (p[full] >> ((i - full * per) * B)) & mask;
}

// b = 3: 8 codes fill exactly 3 bytes.
void pack_3(const uint8_t* c, int64_t n, uint8_t* out) {
  const int64_t full = n / 8;
  for (int64_t j = 0; j < full; ++j) {
    uint32_t v = 0;
    for (int k = 0; k < 8; ++k) v |= uint32_t(c[j * 8 + k] & 7u) << (3 * k);
    out[3 * j] = uint8_t(v);
    out[3 * j + 1] = uint8_t(v >> 8);
    out[3 * j + 2] = uint8_t(v >> 16);
  }
  if (full * 8 < n) {
    uint32_t v = 0;
    for (int64_t i = full * 8; i < n; ++i) v |= uint32_t(c[i] & 7u) << (3 * (i - full * 8));
    const int64_t tail_bytes = packed_bytes(n, 3) - 3 * full;
    for (int64_t b = 0; b < tail_bytes; ++b) out[3 * full + b] = uint8_t(v >> (8 * b));
  }
}

void unpack_3_aligned(const uint8_t* p, int64_t n, uint8_t* c) {
  const int64_t full = n / 8;
  for (int64_t j = 0; j < full; ++j) {
    const uint32_t v = uint32_t(p[3 * j]) | uint32_t(p[3 * j + 1]) << 8 | uint32_t(p[3 * j + 2]) << 16;
    for (int k = 0; k < 8; ++k) c[j * 8 + k] = (v >> (3 * k)) & 7u;
  }
  if (full * 8 < n) {
    uint32_t v = 0;
    const int64_t tail_bytes = packed_bytes(n - full * 8, 3);
    for (int64_t b = 0; b < tail_bytes; ++b) v |= uint32_t(p[3 * full + b]) << (8 * b);
    for (int64_t i = full * 8; i < n; ++i) c[i] = (v >> (3 * (i - full * 8))) & 7u;
  }
}

// Any width, any start: read the (at most two) bytes holding each code. Bounds: the second
// byte is read only when the code straddles into it, so nothing past the stream is touched.
void unpack_generic(const uint8_t* p, int64_t first, int64_t n, int bits, uint8_t* c) {
  const uint32_t mask = (1u << bits) - 1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t bit = (first + i) * bits;
    const int64_t byte = bit >> 3;
    const int sh = int(bit & 7);
    uint32_t v = p[byte];
    if (sh + bits > 8) v |= uint32_t(p[byte + 1]) << 8;
    c[i] = uint8_t((v >> sh) & mask);
  }
}

}  // namespace

void pack_bits(const uint8_t* codes, int64_t n, int bits, uint8_t* out) {
  if (n <= 0) return;
  switch (bits) {
    case 1: return pack_small<1>(codes, n, out);
    case 2: return pack_small<2>(codes, n, out);
    case 3: return pack_3(codes, n, out);
    case 4: return pack_small<4>(codes, n, out);
    case 8: std::memcpy(out, codes, size_t(n)); return;
  }
  throw error("bit packing supports 1, 2, 3, 4 or 8 bits, got {}", bits);
}

void unpack_bits(const uint8_t* packed, int64_t first, int64_t n, int bits, uint8_t* codes) {
  if (n <= 0) return;
  if (!packable_bits(bits)) throw error("bit unpacking supports 1, 2, 3, 4 or 8 bits, got {}", bits);
  if (bits == 8) {
    std::memcpy(codes, packed + first, size_t(n));
    return;
  }
  // Fast paths when the range starts on a byte (or, for 3 bits, an 8-code) boundary.
  const int64_t per_unit = bits == 3 ? 8 : 8 / bits;
  const int64_t unit_bytes = bits == 3 ? 3 : 1;
  if (first % per_unit == 0) {
    const uint8_t* p = packed + (first / per_unit) * unit_bytes;
    switch (bits) {
      case 1: return unpack_small_aligned<1>(p, n, codes);
      case 2: return unpack_small_aligned<2>(p, n, codes);
      case 3: return unpack_3_aligned(p, n, codes);
      case 4: return unpack_small_aligned<4>(p, n, codes);
    }
  }
  unpack_generic(packed, first, n, bits, codes);
}

}  // namespace kvx
