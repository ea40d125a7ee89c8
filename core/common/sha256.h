// SHA-256 (FIPS 180-4) for job keys and content hashes. Streaming: update() any number
// of times, then hex(). Self-contained because the GPU image has no OpenSSL headers.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace kvx {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t len);
  void update(std::string_view s) { update(s.data(), s.size()); }
  std::string hex();  // finalizes; the object must not be updated afterwards

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  uint64_t total_ = 0;
  size_t used_ = 0;
};

std::string sha256_hex(std::string_view s);
// Hash of a file's bytes, read in 1 MiB blocks; throws kvx::Error naming the file.
std::string sha256_file(const std::string& path);

}  // namespace kvx
