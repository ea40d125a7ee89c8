// Removes a file or a folder with everything below it (symbolic links themselves, never what they
// point to), like `rm -rf`. kvx calls this instead of std::filesystem::remove_all: pip's LibTorch
// exports its own copy of that function, which the dynamic linker may pick for kvx's calls, and
// that copy crashes when called from outside LibTorch.
#pragma once
#include <string>

namespace kvx {

// True when nothing is left at `path` (also when nothing was there).
bool remove_tree(const std::string& path) noexcept;

}  // namespace kvx
