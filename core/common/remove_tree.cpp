#include "core/common/remove_tree.h"

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

namespace kvx {
namespace {
// Children before their folder (FTW_DEPTH), links not followed (FTW_PHYS).
int remove_one(const char* path, const struct stat*, int type, struct FTW*) {
  return (type == FTW_DP ? ::rmdir(path) : ::unlink(path)) == 0 ? 0 : -1;
}
}  // namespace

bool remove_tree(const std::string& path) noexcept {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return true;  // nothing there
  if (!S_ISDIR(st.st_mode)) return ::unlink(path.c_str()) == 0;
  return ::nftw(path.c_str(), remove_one, 32, FTW_DEPTH | FTW_PHYS) == 0;
}

}  // namespace kvx
