// Bit packing of unsigned codes of b ∈ {1, 2, 3, 4, 8} bits (docs/methods/README.md,
// "Memory accounting").
//
// Layout: code i occupies stream bits [i·b, i·b + b), LSB-first; the stream is stored in
// ceil(n·b/8) bytes, byte j holding stream bits [8j, 8j+8). Read as little-endian 32-bit words
// this is exactly "LSB-first within little-endian 32-bit words" (3-bit codes straddle bytes and
// words); defining it on bytes keeps the size exact (no padding to a word) and the format
// independent of the host's endianness.
//
// The loops are plain per-byte / per-8-code loops the compiler vectorizes; the generic path
// handles any start offset (unpacking one row out of a block).
#pragma once
#include <cstdint>

namespace kvx {

// Bytes needed for n codes of `bits` bits.
inline int64_t packed_bytes(int64_t n, int bits) { return (n * bits + 7) / 8; }

// True for the widths the packer supports.
inline bool packable_bits(int bits) {
  return bits == 1 || bits == 2 || bits == 3 || bits == 4 || bits == 8;
}

// Packs n codes (each < 2^bits; higher bits are masked off) into out[0 .. packed_bytes(n)).
void pack_bits(const uint8_t* codes, int64_t n, int bits, uint8_t* out);

// Unpacks codes [first, first + n) of a packed stream into codes[0 .. n).
void unpack_bits(const uint8_t* packed, int64_t first, int64_t n, int bits, uint8_t* codes);

}  // namespace kvx
