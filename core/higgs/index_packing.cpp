#include "core/higgs/index_packing.h"

#include <cstring>

#include "core/cache/bit_packing.h"
#include "core/common/error.h"

namespace kvx::higgs {

void pack_indices(const int32_t* codes, int64_t count, int bits, uint8_t* out) {
  if (bits < 1 || bits > 16) throw error("HIGGS index width must be 1..16 bits, got {}", bits);
  const int64_t nbytes = index_packed_bytes(count, bits);
  if (packable_bits(bits)) {
    std::vector<uint8_t> c(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) c[size_t(i)] = uint8_t(codes[i]);
    pack_bits(c.data(), count, bits, out);
    return;
  }
  std::memset(out, 0, size_t(nbytes));
  const uint32_t mask = (1u << bits) - 1;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t bit = i * bits;
    const uint32_t v = (uint32_t(codes[i]) & mask) << (bit & 7);  // at most 23 bits wide
    uint8_t* p = out + (bit >> 3);
    const int64_t span = ((bit & 7) + bits + 7) / 8;
    for (int64_t k = 0; k < span; ++k) p[k] |= uint8_t(v >> (8 * k));
  }
}

void unpack_indices(const uint8_t* packed, int64_t count, int bits, int32_t* codes) {
  if (bits < 1 || bits > 16) throw error("HIGGS index width must be 1..16 bits, got {}", bits);
  if (packable_bits(bits)) {
    std::vector<uint8_t> c(static_cast<size_t>(count));
    unpack_bits(packed, 0, count, bits, c.data());
    for (int64_t i = 0; i < count; ++i) codes[i] = c[size_t(i)];
    return;
  }
  const uint32_t mask = (1u << bits) - 1;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t bit = i * bits;
    const uint8_t* p = packed + (bit >> 3);
    const int64_t span = ((bit & 7) + bits + 7) / 8;
    uint32_t v = 0;
    for (int64_t k = 0; k < span; ++k) v |= uint32_t(p[k]) << (8 * k);
    codes[i] = int32_t((v >> (bit & 7)) & mask);
  }
}

}  // namespace kvx::higgs
