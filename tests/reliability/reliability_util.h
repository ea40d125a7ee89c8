// Shared helpers of the reliability suites: process spawning in a fresh process group, round
// counts (KVX_RELIABILITY_LONG scales them up), a failure counter that also fails the gtest.
#pragma once
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/engine/engine_test_util.h"

namespace kvx::rel {

inline bool long_mode() {
  const char* e = std::getenv("KVX_RELIABILITY_LONG");
  return e && *e && std::string(e) != "0";
}

// The `_long` ctest entries (KVX_RELIABILITY_LONG_ONLY=1) skip unless KVX_RELIABILITY_LONG=1.
inline bool skip_this_run() {
  const char* e = std::getenv("KVX_RELIABILITY_LONG_ONLY");
  return e && *e && std::string(e) != "0" && !long_mode();
}

// Rounds: the default (ctest), or long_rounds with KVX_RELIABILITY_LONG=1 (ctest -L reliability_long).
inline int rounds(int normal, int long_rounds) { return long_mode() ? long_rounds : normal; }

// Starts `kvx ARGS` in dir as the leader of a new process group; output goes to log_path.
inline pid_t spawn_kvx(const std::string& dir, const std::vector<std::string>& args, const std::string& log_path) {
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    if (chdir(dir.c_str()) != 0) _exit(126);
    if (!freopen(log_path.c_str(), "a", stdout)) _exit(126);
    dup2(fileno(stdout), fileno(stderr));
    std::vector<char*> argv;
    std::string bin = kvx::test::kvx_bin();
    argv.push_back(bin.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  setpgid(pid, pid);
  return pid;
}

inline int wait_rc(pid_t pid) {
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// Direct children of pid (from /proc/*/stat).
inline std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    long p = std::strtol(e->d_name, &end, 10);
    if (p <= 0 || *end) continue;
    std::ifstream f(std::string("/proc/") + e->d_name + "/stat");
    std::string s;
    std::getline(f, s);
    auto rp = s.rfind(')');
    if (rp == std::string::npos) continue;
    char state = 0;
    long ppid = 0;
    if (std::sscanf(s.c_str() + rp + 1, " %c %ld", &state, &ppid) == 2 && ppid == parent && state != 'Z')
      out.push_back(static_cast<pid_t>(p));
  }
  closedir(d);
  return out;
}

// Every process of group pgid is gone (after a kill -9 of the group, orphans may linger briefly).
inline void wait_group_gone(pid_t pgid) {
  for (int i = 0; i < 500 && kill(-pgid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

}  // namespace kvx::rel
