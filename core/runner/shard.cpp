#include "core/runner/shard.h"

#include <cstdint>

#include "core/common/error.h"

namespace kvx::runner {

Shard parse_shard(const std::string& text) {
  const auto slash = text.find('/');
  auto number = [&](const std::string& s) -> long {
    if (s.empty() || s.size() > 6 || s.find_first_not_of("0123456789") != std::string::npos) return -1;
    return std::stol(s);
  };
  long i = slash == std::string::npos ? -1 : number(text.substr(0, slash));
  long n = slash == std::string::npos ? -1 : number(text.substr(slash + 1));
  if (i < 0 || n < 1 || n > 100000 || i >= n)
    throw error("--shard '{}': expected i/N with 0 <= i < N (e.g. 0/4 ... 3/4, as SLURM_ARRAY_TASK_ID/N)", text);
  return {static_cast<int>(i), static_cast<int>(n)};
}

int shard_of(const std::string& job_key, int count) {
  if (count <= 1) return 0;
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64: stable across hosts, compilers and runs
  for (unsigned char c : job_key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return static_cast<int>(h % static_cast<uint64_t>(count));
}

std::vector<JobSpec> jobs_in_shard(const std::vector<JobSpec>& all, const Shard& s) {
  if (s.count <= 1) return all;
  std::vector<JobSpec> out;
  for (const auto& j : all)
    if (shard_of(j.key, s.count) == s.index) out.push_back(j);
  return out;
}

}  // namespace kvx::runner
