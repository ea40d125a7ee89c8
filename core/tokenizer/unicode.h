// UTF-8 helpers (validation, lossy repair as Rust's String::from_utf8_lossy does it) and
// GPT-2's byte-level alphabet (bytes_to_unicode: every byte gets a printable code point).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvx::tok {

// Length of the code point starting at s[i] (1..4), clamped to the bytes left; for valid
// UTF-8 this is the exact sequence length, for anything else it still makes progress.
size_t utf8_char_len(std::string_view s, size_t i);
// Byte offset of the first ill-formed sequence, or npos when s is valid UTF-8.
size_t utf8_invalid_offset(std::string_view s);
// Each maximal ill-formed subpart becomes U+FFFD (the Unicode / Rust substitution rule).
std::string utf8_lossy(std::string_view s);
void utf8_append(std::string& out, uint32_t cp);
// Decodes the code point at s[i] (s valid) and advances i.
uint32_t utf8_next(std::string_view s, size_t& i);

// GPT-2 byte-level mapping.
const std::string& byte_to_unicode(uint8_t b);  // UTF-8 of the code point standing for b
int unicode_to_byte(uint32_t cp);               // inverse; -1 for code points not in the map

}  // namespace kvx::tok
