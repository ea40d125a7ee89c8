// kvx::Error is the one exception type that reaches the user: its message is printed as
// "kvx: error: <message>" and the process exits with status 2. Messages name the file,
// key or line at fault and say what was expected; anything else escaping is a bug.
#pragma once
#include <stdexcept>
#include <string>

namespace kvx {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// Build an Error with fmt-style formatting: throw error("{}: missing key '{}'", path, key);
template <typename... Args>
Error error(const char* fmt_str, Args&&... args);

}  // namespace kvx

#include <fmt/format.h>
template <typename... Args>
kvx::Error kvx::error(const char* fmt_str, Args&&... args) {
  return Error(fmt::format(fmt::runtime(fmt_str), std::forward<Args>(args)...));
}
