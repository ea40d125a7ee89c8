// kvx merge: union of shard databases is idempotent; conflicting duplicates are reported and
// not overwritten; a job done in one input replaces its pending copy; bad inputs are refused
// before anything is written.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "core/common/error.h"
#include "core/store/merge.h"
#include "core/store/store.h"
#include "core/common/remove_tree.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::vector<std::string> rows(const std::string& db, const std::string& sql) {
  sqlite3* h = nullptr;
  sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* st = nullptr;
  std::vector<std::string> out;
  if (sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) == SQLITE_OK)
    while (sqlite3_step(st) == SQLITE_ROW) {
      std::string r;
      for (int c = 0; c < sqlite3_column_count(st); ++c) {
        auto t = sqlite3_column_text(st, c);
        r += (c ? "|" : "") + (t ? std::string(reinterpret_cast<const char*>(t)) : std::string("NULL"));
      }
      out.push_back(r);
    }
  sqlite3_finalize(st);
  sqlite3_close(h);
  return out;
}

kvx::JobSpec job(const std::string& key) {
  kvx::JobSpec j;
  j.key = key;
  j.job = {{"protocol", {{"name", "noop"}, {"value", key}}}};
  j.protocol = "noop";
  j.method = "none";
  return j;
}

class Merge : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string t = (fs::temp_directory_path() / "kvx-merge-XXXXXX").string();
    ASSERT_TRUE(mkdtemp(t.data()));
    dir = t;
  }
  void TearDown() override { kvx::remove_tree(dir); }
  // A shard database holding `keys` of sweep "s"; those in `done` completed with metric value.
  std::string shard(const std::string& name, const std::vector<std::string>& keys,
                    const std::map<std::string, double>& done) {
    std::string path = dir + "/" + name + ".db";
    kvx::Store s(path, kvx::Store::Access::ReadWrite);
    std::vector<kvx::JobSpec> jobs;
    for (const auto& k : keys) jobs.push_back(job(k));
    int64_t id = s.upsert_sweep("s", "/x.yaml", "name: s", jobs, 1, false);
    kvx::Environment env;
    env.host = "h";
    std::vector<std::string> held;
    while (auto c = s.claim(id, "w:1", "", 60)) {
      auto it = done.find(c->key);
      if (it != done.end()) s.complete(c->key, "w:1", json{{"value", it->second}}, 1.0, 2.0, env);
      else held.push_back(c->key);
    }
    for (const auto& k : held) s.release(k, "w:1");
    return path;
  }
  std::string dir;
};

TEST_F(Merge, UnionOfDisjointShardsIsIdempotent) {
  auto a = shard("a", {"k1", "k2"}, {{"k1", 1.0}, {"k2", 2.0}});
  auto b = shard("b", {"k3"}, {{"k3", 3.0}});
  std::string out = dir + "/out.db";
  auto r = kvx::merge_databases(out, {a, b});
  EXPECT_EQ(r.inputs, 2);
  EXPECT_EQ(r.jobs_added, 3);
  EXPECT_EQ(r.results_added, 3);
  EXPECT_TRUE(r.conflicts.empty());
  EXPECT_EQ(rows(out, "SELECT COUNT(*) FROM jobs WHERE status='done'"), std::vector<std::string>{"3"});
  EXPECT_EQ(rows(out, "SELECT name FROM sweeps"), std::vector<std::string>{"s"});
  EXPECT_EQ(rows(out, "SELECT COUNT(*) FROM sweep_jobs"), std::vector<std::string>{"3"});
  const auto before = rows(out, "SELECT * FROM results ORDER BY id");
  const auto jobs_before = rows(out, "SELECT * FROM jobs ORDER BY key");
  auto r2 = kvx::merge_databases(out, {b, a, a});
  EXPECT_EQ(r2.jobs_added, 0);
  EXPECT_EQ(r2.jobs_updated, 0);
  EXPECT_EQ(r2.results_added, 0);
  EXPECT_EQ(r2.unchanged, 5);
  EXPECT_TRUE(r2.conflicts.empty());
  EXPECT_EQ(rows(out, "SELECT * FROM results ORDER BY id"), before);
  EXPECT_EQ(rows(out, "SELECT * FROM jobs ORDER BY key"), jobs_before);
  // The merged database is a normal kvx database.
  kvx::Store s(out, kvx::Store::Access::ReadOnly);
  EXPECT_EQ(s.results(std::string("s")).size(), 3u);
}

TEST_F(Merge, ConflictingDuplicateReportedNotOverwritten) {
  auto a = shard("a", {"k1", "k2"}, {{"k1", 1.0}, {"k2", 2.0}});
  auto b = shard("b", {"k2"}, {{"k2", 99.0}});
  std::string out = dir + "/out.db";
  auto r = kvx::merge_databases(out, {a, b});
  ASSERT_EQ(r.conflicts.size(), 1u);
  EXPECT_EQ(r.conflicts[0].key, "k2");
  EXPECT_EQ(r.conflicts[0].source, b);
  EXPECT_EQ(json::parse(r.conflicts[0].kept_metrics)["value"], 2.0);
  EXPECT_EQ(json::parse(r.conflicts[0].other_metrics)["value"], 99.0);
  EXPECT_EQ(rows(out, "SELECT metrics FROM results WHERE job_key='k2'"), std::vector<std::string>{"{\"value\":2.0}"});
  EXPECT_EQ(rows(out, "SELECT COUNT(*) FROM results"), std::vector<std::string>{"2"});
  // Same report again, still nothing overwritten.
  auto r2 = kvx::merge_databases(out, {b});
  EXPECT_EQ(r2.conflicts.size(), 1u);
  EXPECT_EQ(rows(out, "SELECT metrics FROM results WHERE job_key='k2'"), std::vector<std::string>{"{\"value\":2.0}"});
}

TEST_F(Merge, DoneReplacesPendingNeverTheReverse) {
  auto pending = shard("p", {"k1", "k2"}, {{"k1", 1.0}});  // k2 pending
  auto done = shard("d", {"k2"}, {{"k2", 2.0}});
  std::string out = dir + "/out.db";
  auto r = kvx::merge_databases(out, {pending, done});
  EXPECT_EQ(r.jobs_updated, 1);
  EXPECT_EQ(rows(out, "SELECT status FROM jobs WHERE key='k2'"), std::vector<std::string>{"done"});
  EXPECT_EQ(rows(out, "SELECT metrics FROM results WHERE job_key='k2'"), std::vector<std::string>{"{\"value\":2.0}"});
  auto r2 = kvx::merge_databases(out, {pending});  // the pending copy does not undo it
  EXPECT_EQ(r2.jobs_updated, 0);
  EXPECT_EQ(rows(out, "SELECT status FROM jobs WHERE key='k2'"), std::vector<std::string>{"done"});
  EXPECT_EQ(rows(out, "SELECT COUNT(*) FROM results"), std::vector<std::string>{"2"});
}

TEST_F(Merge, RefusesBadInputsBeforeWriting) {
  auto a = shard("a", {"k1"}, {{"k1", 1.0}});
  std::string out = dir + "/out.db";
  EXPECT_THROW(kvx::merge_databases(out, {a, dir + "/missing.db"}), kvx::Error);
  EXPECT_FALSE(fs::exists(out));
  std::string junk = dir + "/junk.db";
  std::ofstream(junk) << "not a database at all, not even close..........";
  EXPECT_THROW(kvx::merge_databases(out, {a, junk}), kvx::Error);
  EXPECT_FALSE(fs::exists(out));
  // A newer schema version is refused.
  auto newer = shard("n", {"k9"}, {});
  {
    sqlite3* h = nullptr;
    sqlite3_open(newer.c_str(), &h);
    sqlite3_exec(h, "UPDATE schema_version SET version=99", nullptr, nullptr, nullptr);
    sqlite3_close(h);
  }
  try {
    kvx::merge_databases(out, {a, newer});
    FAIL() << "merged a newer schema";
  } catch (const kvx::Error& e) {
    EXPECT_NE(std::string(e.what()).find("newer"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(out));
  EXPECT_THROW(kvx::merge_databases(a, {a}), kvx::Error);  // output is an input
}

}  // namespace
