// --shard i/N: every job key in exactly one shard, the same one every time.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "core/common/error.h"
#include "core/common/sha256.h"
#include "core/runner/shard.h"

using kvx::runner::jobs_in_shard;
using kvx::runner::parse_shard;
using kvx::runner::shard_of;

namespace {

std::vector<kvx::JobSpec> fake_jobs(int n) {
  std::vector<kvx::JobSpec> jobs;
  for (int i = 0; i < n; ++i) {
    kvx::JobSpec j;
    j.key = kvx::sha256_hex("job-" + std::to_string(i));
    jobs.push_back(j);
  }
  return jobs;
}

TEST(Shard, EveryKeyInExactlyOneShard) {
  const auto jobs = fake_jobs(500);
  for (int n : {1, 2, 3, 7, 16}) {
    std::map<std::string, int> seen;
    for (int i = 0; i < n; ++i)
      for (const auto& j : jobs_in_shard(jobs, {i, n})) seen[j.key]++;
    ASSERT_EQ(seen.size(), jobs.size()) << "N=" << n;
    for (const auto& [k, c] : seen) EXPECT_EQ(c, 1) << k << " N=" << n;
  }
}

TEST(Shard, DeterministicAndOrderIndependent) {
  auto jobs = fake_jobs(200);
  auto a = jobs_in_shard(jobs, {1, 4});
  std::reverse(jobs.begin(), jobs.end());
  auto b = jobs_in_shard(jobs, {1, 4});
  std::set<std::string> ka, kb;
  for (const auto& j : a) ka.insert(j.key);
  for (const auto& j : b) kb.insert(j.key);
  EXPECT_EQ(ka, kb);
  // Pinned values: a change of the hash would silently reshuffle resumable shards.
  EXPECT_EQ(shard_of("", 1000), static_cast<int>(14695981039346656037ull % 1000));
  EXPECT_EQ(shard_of("a", 7), static_cast<int>(0xaf63dc4c8601ec8cull % 7));
  EXPECT_EQ(shard_of("anything", 1), 0);
}

TEST(Shard, RoughlyBalanced) {
  const auto jobs = fake_jobs(4000);
  for (int i = 0; i < 4; ++i) {
    auto s = jobs_in_shard(jobs, {i, 4}).size();
    EXPECT_GT(s, 850u);
    EXPECT_LT(s, 1150u);
  }
}

TEST(Shard, ParseAndErrors) {
  auto s = parse_shard("2/5");
  EXPECT_EQ(s.index, 2);
  EXPECT_EQ(s.count, 5);
  EXPECT_EQ(parse_shard("0/1").count, 1);
  for (const char* bad : {"", "3", "5/5", "-1/4", "1/0", "a/b", "1/4/2", " 1/4", "1/1000001"})
    EXPECT_THROW(parse_shard(bad), kvx::Error) << bad;
}

}  // namespace
