// Bit packing: round trips for every width and odd lengths, exact size ceil(n·b/8), and the
// byte layout checked against an independent bit-by-bit reference of the documented format
// (LSB-first stream == LSB-first within little-endian 32-bit words).
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "core/cache/bit_packing.h"

namespace {

std::vector<uint8_t> reference_pack(const std::vector<uint8_t>& codes, int b) {
  std::vector<uint8_t> out((codes.size() * b + 7) / 8, 0);
  for (size_t i = 0; i < codes.size(); ++i)
    for (int j = 0; j < b; ++j) {
      const size_t bit = i * b + j;
      if ((codes[i] >> j) & 1) out[bit / 8] |= uint8_t(1u << (bit % 8));
    }
  return out;
}

TEST(BitPacking, RoundTripAndLayoutAllWidthsOddLengths) {
  std::mt19937 rng(7);
  for (int b : {1, 2, 3, 4, 8}) {
    for (int64_t n : {1, 7, 33, 1001}) {
      std::vector<uint8_t> codes(static_cast<size_t>(n));
      for (auto& c : codes) c = uint8_t(rng() % (1u << b));
      const int64_t nbytes = (n * b + 7) / 8;
      ASSERT_EQ(kvx::packed_bytes(n, b), nbytes);
      std::vector<uint8_t> packed(size_t(nbytes) + 8, 0xAB);  // canary bytes after the stream
      kvx::pack_bits(codes.data(), n, b, packed.data());
      for (size_t i = size_t(nbytes); i < packed.size(); ++i) ASSERT_EQ(packed[i], 0xAB) << "wrote past the end";
      const auto ref = reference_pack(codes, b);
      for (int64_t i = 0; i < nbytes; ++i) ASSERT_EQ(packed[size_t(i)], ref[size_t(i)]) << "b=" << b << " n=" << n << " byte " << i;
      std::vector<uint8_t> back(size_t(n), 0xFF);
      kvx::unpack_bits(packed.data(), 0, n, b, back.data());
      EXPECT_EQ(back, codes) << "b=" << b << " n=" << n;
      // sub-ranges starting anywhere (one row of a block)
      for (int64_t first : {int64_t(0), int64_t(1), int64_t(3), int64_t(5), int64_t(8), n / 2, n - 1}) {
        if (first >= n) continue;
        const int64_t cnt = n - first;
        std::vector<uint8_t> part(static_cast<size_t>(cnt));
        kvx::unpack_bits(packed.data(), first, cnt, b, part.data());
        for (int64_t i = 0; i < cnt; ++i) ASSERT_EQ(part[size_t(i)], codes[size_t(first + i)]) << "b=" << b << " first=" << first;
      }
    }
  }
}

TEST(BitPacking, ThreeBitCodesStraddleLittleEndianWords) {
  // Code 10 of a 3-bit stream occupies stream bits 30..32: two bits in word 0, one in word 1.
  std::vector<uint8_t> codes(11, 0);
  codes[10] = 0b111;
  std::vector<uint8_t> packed(size_t(kvx::packed_bytes(11, 3)));
  ASSERT_EQ(packed.size(), 5u);
  kvx::pack_bits(codes.data(), 11, 3, packed.data());
  const uint32_t w0 = uint32_t(packed[0]) | uint32_t(packed[1]) << 8 | uint32_t(packed[2]) << 16 | uint32_t(packed[3]) << 24;
  EXPECT_EQ(w0, 0xC0000000u);
  EXPECT_EQ(packed[4], 0x01);
}

TEST(BitPacking, MasksHighBits) {
  const uint8_t codes[4] = {0xFF, 0x00, 0xFE, 0x01};
  uint8_t packed[1] = {0};
  kvx::pack_bits(codes, 4, 2, packed);
  EXPECT_EQ(packed[0], 0b01100011);
}

}  // namespace
