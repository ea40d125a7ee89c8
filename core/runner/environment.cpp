#include "core/runner/environment.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "core/common/build_info.h"

namespace kvx::runner {

std::string command_output(const std::string& cmd) {
  FILE* p = popen((cmd + " 2>/dev/null").c_str(), "r");
  if (!p) return "";
  std::string out;
  char buf[512];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  if (pclose(p) != 0) return "";
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ' || out.back() == '\r')) out.pop_back();
  return out;
}

std::vector<std::string> visible_gpus() {
  std::vector<std::string> ids;
  if (const char* v = std::getenv("CUDA_VISIBLE_DEVICES")) {
    std::string s = v, cur;
    for (char c : s + ",") {
      if (c == ',') {
        if (!cur.empty() && cur != "-1") ids.push_back(cur);
        cur.clear();
      } else if (c != ' ') {
        cur += c;
      }
    }
    return ids;
  }
  std::string list = command_output("nvidia-smi -L");
  int n = 0;
  for (size_t pos = 0; (pos = list.find("GPU ", pos)) != std::string::npos; ++pos)
    if (pos == 0 || list[pos - 1] == '\n') ids.push_back(std::to_string(n++));
  return ids;
}

Environment current_environment(const std::string& device, const std::string& gpu_index) {
  Environment e;
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  e.host = host;
  const auto& b = build_info();
  e.torch_version = b.torch_version;
  e.git_commit = b.git_commit;
  e.kvx_version = b.version;
  if (device == "cuda") {
    std::string idx = gpu_index.empty() ? "0" : gpu_index;
    e.gpu = command_output("nvidia-smi --query-gpu=name --format=csv,noheader -i " + idx);
    if (const char* v = std::getenv("CUDA_VERSION")) e.cuda_version = v;
    if (e.cuda_version.empty()) {
      // The driver's CUDA version from nvidia-smi's banner ("CUDA Version: 12.4").
      std::string banner = command_output("nvidia-smi");
      auto p = banner.find("CUDA Version:");
      if (p != std::string::npos) {
        p += 13;
        while (p < banner.size() && banner[p] == ' ') ++p;
        auto q = banner.find(' ', p);
        e.cuda_version = banner.substr(p, q - p);
      }
    }
  }
  return e;
}

}  // namespace kvx::runner
