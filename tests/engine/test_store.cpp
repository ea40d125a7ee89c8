// The SQLite store: refusing foreign files unchanged, claim/complete/fail/lease semantics,
// jobs shared between sweeps.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "core/common/error.h"
#include "core/store/store.h"
#include "engine_test_util.h"
#include "core/common/remove_tree.h"

using kvx::JobSpec;
using kvx::Store;
using kvx::test::query;
using kvx::test::query1;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const kvx::Error& e) {
    return e.what();
  }
  return "(no error)";
}

JobSpec job(const std::string& key, double cost = 1) {
  JobSpec j;
  j.key = key;
  j.job = {{"model", nullptr}, {"dataset", nullptr}, {"protocol", {{"name", "noop"}}}, {"method", {{"k", key}}}};
  j.protocol = "noop";
  j.method = "m";
  j.label = "none";
  j.params = {{"protocol.value", 1}};
  j.cost = cost;
  return j;
}

std::string host() {
  std::string id = kvx::worker_identity();
  return id.substr(0, id.rfind(':'));
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = kvx::test::make_temp_dir();
    db = dir + "/r.db";
  }
  void TearDown() override { kvx::remove_tree(dir); }
  std::string dir, db;
};

}  // namespace

TEST_F(StoreTest, RefusesNonSqliteFileUnchanged) {
  const std::string text = "name,value\nnot,a database\n";
  kvx::test::write_file(db, text);
  EXPECT_EQ(error_of([&] { Store s(db, Store::Access::ReadWrite); }),
            db + ": not an SQLite database (refusing to touch it)");
  EXPECT_EQ(kvx::test::read_file(db), text);
  EXPECT_FALSE(std::filesystem::exists(db + "-wal"));
}

TEST_F(StoreTest, RefusesForeignSqliteUnchanged) {
  sqlite3* h = nullptr;
  sqlite3_open(db.c_str(), &h);
  sqlite3_exec(h, "CREATE TABLE people(name TEXT); INSERT INTO people VALUES('ada');", nullptr, nullptr, nullptr);
  sqlite3_close(h);
  const std::string before = kvx::test::read_file(db);
  EXPECT_EQ(error_of([&] { Store s(db, Store::Access::ReadWrite); }),
            db + ": an SQLite database but not a kvx database (refusing to touch it)");
  EXPECT_EQ(kvx::test::read_file(db), before);
  EXPECT_EQ(query(db, "SELECT name FROM sqlite_master WHERE type='table'"), std::vector<std::string>{"people"});
}

TEST_F(StoreTest, RefusesNewerSchema) {
  { Store s(db, Store::Access::ReadWrite); }
  sqlite3* h = nullptr;
  sqlite3_open(db.c_str(), &h);
  sqlite3_exec(h, "UPDATE schema_version SET version=99", nullptr, nullptr, nullptr);
  sqlite3_close(h);
  std::string e = error_of([&] { Store s(db, Store::Access::ReadWrite); });
  EXPECT_EQ(e, db + ": database schema version 99 is newer than this kvx supports (1); use a newer kvx");
  EXPECT_EQ(query1(db, "SELECT version FROM schema_version"), "99");
}

TEST_F(StoreTest, ReadOnlyNeedsAnExistingDatabase) {
  EXPECT_EQ(error_of([&] { Store s(db, Store::Access::ReadOnly); }), db + ": no such database");
  EXPECT_FALSE(std::filesystem::exists(db));
}

TEST_F(StoreTest, ClaimCompleteFailRetry) {
  Store s(db, Store::Access::ReadWrite);
  int64_t sweep = s.upsert_sweep("s", "/c.yaml", "text", {job("a", 1), job("b", 5)}, 1, false);
  // Longest first: b (cost 5) before a.
  auto c1 = s.claim(sweep, "w1", "", 60);
  ASSERT_TRUE(c1);
  EXPECT_EQ(c1->key, "b");
  EXPECT_EQ(c1->attempts, 1);
  EXPECT_FALSE(s.complete("b", "w2", {{"value", 1}}, 0, 1, {}));  // not the holder
  EXPECT_FALSE(s.heartbeat("b", "w2"));
  EXPECT_TRUE(s.heartbeat("b", "w1"));
  EXPECT_TRUE(s.complete("b", "w1", {{"value", 1}}, 10, 12, {"h", "gpu", "1.13", "", "abc", "0.1"}));
  EXPECT_FALSE(s.complete("b", "w1", {{"value", 1}}, 10, 12, {}));  // only once
  EXPECT_EQ(query(db, "SELECT job_key, metrics, seconds, host, git_commit FROM results"),
            std::vector<std::string>{"b|{\"value\":1}|2.0|h|abc"});
  // a fails twice with retries=1: pending after the first failure, failed after the second.
  auto c2 = s.claim(sweep, "w1", "", 60);
  ASSERT_TRUE(c2);
  EXPECT_EQ(c2->key, "a");
  s.fail("a", "w1", "boom 1");
  EXPECT_EQ(query1(db, "SELECT status, failures, attempts, error FROM jobs WHERE key='a'"), "pending|1|1|boom 1");
  auto c3 = s.claim(sweep, "w1", "", 60);
  ASSERT_TRUE(c3);
  EXPECT_EQ(c3->attempts, 2);
  s.fail("a", "w1", "boom 2");
  EXPECT_EQ(query1(db, "SELECT status, failures, attempts, error FROM jobs WHERE key='a'"), "failed|2|2|boom 2");
  EXPECT_FALSE(s.claim(sweep, "w1", "", 60));
  auto c = s.counts(sweep);
  EXPECT_EQ(c.total, 2);
  EXPECT_EQ(c.done, 1);
  EXPECT_EQ(c.failed, 1);
  // A raised retry budget makes the failed job pending again; --retry-failed resets it.
  s.upsert_sweep("s", "/c.yaml", "text", {job("a", 1), job("b", 5)}, 2, false);
  EXPECT_EQ(query1(db, "SELECT status FROM jobs WHERE key='a'"), "pending");
}

TEST_F(StoreTest, PrefersLoadedModel) {
  Store s(db, Store::Access::ReadWrite);
  JobSpec a = job("a", 10), b = job("b", 1);
  a.model_path = "/m/big";
  b.model_path = "/m/small";
  int64_t sweep = s.upsert_sweep("s", "", "", {a, b}, 0, false);
  auto c = s.claim(sweep, "w", "/m/small", 60);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->key, "b");
}

TEST_F(StoreTest, StaleLeaseIsReclaimedWithoutCountingAFailure) {
  Store s(db, Store::Access::ReadWrite);
  int64_t sweep = s.upsert_sweep("s", "", "", {job("a")}, 0, false);
  ASSERT_TRUE(s.claim(sweep, "elsewhere:1", "", 0.05));
  EXPECT_FALSE(s.claim(sweep, "w2", "", 60));  // lease of 60 s: still held
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  auto c = s.claim(sweep, "w2", "", 0.05);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->attempts, 2);
  EXPECT_FALSE(s.complete("a", "elsewhere:1", {{"value", 1}}, 0, 1, {}));  // the old holder lost it
  EXPECT_TRUE(s.complete("a", "w2", {{"value", 2}}, 0, 1, {}));
  EXPECT_EQ(query(db, "SELECT metrics FROM results"), std::vector<std::string>{"{\"value\":2}"});
  EXPECT_EQ(query1(db, "SELECT failures FROM jobs"), "0");
}

TEST_F(StoreTest, DeadLocalWorkerIsReclaimedAtOnce) {
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  waitpid(pid, nullptr, 0);  // a process id that no longer runs
  Store s(db, Store::Access::ReadWrite);
  int64_t sweep = s.upsert_sweep("s", "", "", {job("a")}, 0, false);
  ASSERT_TRUE(s.claim(sweep, host() + ":" + std::to_string(pid), "", 3600));
  auto c = s.claim(sweep, "w2", "", 3600);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->key, "a");
}

TEST_F(StoreTest, SweepsShareJobs) {
  Store s(db, Store::Access::ReadWrite);
  int64_t s1 = s.upsert_sweep("one", "", "", {job("a"), job("b")}, 0, false);
  int64_t s2 = s.upsert_sweep("two", "", "", {job("b"), job("c")}, 0, false);
  EXPECT_NE(s1, s2);
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM jobs"), "3");
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM sweep_jobs"), "4");
  auto c = s.claim(s2, "w", "", 60);
  ASSERT_TRUE(c);
  EXPECT_TRUE(s.complete(c->key, "w", {{"value", 1}}, 0, 1, {}));
  // Rerunning sweep one with the same name keeps one sweep row.
  EXPECT_EQ(s.upsert_sweep("one", "", "", {job("a")}, 0, false), s1);
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM sweeps"), "2");
  EXPECT_EQ(s.counts(s1).total, 1);
  EXPECT_EQ(s.results(std::string("two")).size(), 1u);
  EXPECT_EQ(s.results(std::string("one")).size(), c->key == "b" ? 0u : 0u);
}
