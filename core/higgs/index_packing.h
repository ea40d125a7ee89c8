// Bit packing of HIGGS grid indices of log2(n) bits (1..16). Widths kvx::pack_bits supports
// (1, 2, 3, 4, 8) go through it; the others (6 bits for n = 64, 12 for n = 4096, 16 for
// n = 65536, ...) use a local packer with the very same layout: code i occupies stream bits
// [i·b, i·b + b), LSB-first, stored in ceil(count·b/8) bytes (core/cache/bit_packing.h).
#pragma once
#include <cstdint>
#include <vector>

namespace kvx::higgs {

inline int64_t index_packed_bytes(int64_t count, int bits) { return (count * bits + 7) / 8; }
void pack_indices(const int32_t* codes, int64_t count, int bits, uint8_t* out);
void unpack_indices(const uint8_t* packed, int64_t count, int bits, int32_t* codes);

}  // namespace kvx::higgs
