// End-to-end `kvx run / status / report` with the kvx binary (KVX_BIN) on noop jobs:
// caching, dry run, validation before writing, failures and NaN, resume after kill -9 of the
// whole process group, two runners on one database, Ctrl-C, SQL-injection strings.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine_test_util.h"
#include "core/common/remove_tree.h"

namespace fs = std::filesystem;
using kvx::test::query;
using kvx::test::query1;
using kvx::test::quote;
using kvx::test::run_cmd;

namespace {

class RunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kvx::test::kvx_bin().empty()) GTEST_SKIP() << "KVX_BIN not set";
    dir = kvx::test::make_temp_dir();
    db = dir + "/results/kvx.db";
  }
  void TearDown() override {
    if (!dir.empty()) kvx::remove_tree(dir);
  }
  std::string config(const std::string& name, const std::string& body) {
    std::string path = dir + "/" + name + ".yaml";
    kvx::test::write_file(path, "name: " + name + "\ndb: results/kvx.db\n" + body);
    return path;
  }
  kvx::test::CmdResult kvx(const std::string& args) {
    return run_cmd("cd " + quote(dir) + " && " + quote(kvx::test::kvx_bin()) + " " + args);
  }
  // Starts `kvx ARGS` in its own process group; returns its pid (== pgid).
  pid_t spawn(const std::vector<std::string>& args) {
    pid_t pid = fork();
    if (pid == 0) {
      setpgid(0, 0);
      if (chdir(dir.c_str()) != 0) _exit(126);
      freopen("/dev/null", "w", stdout);
      freopen("/dev/null", "w", stderr);
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
  int count(const std::string& sql) {
    try {
      auto r = query1(db, sql);
      return r.empty() ? 0 : std::stoi(r);
    } catch (...) {
      return 0;  // not created yet
    }
  }
  void wait_for_results(int n) {
    for (int i = 0; i < 1500 && count("SELECT COUNT(*) FROM results") < n; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  static int wait_rc(pid_t pid) {
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  std::string dir, db;
};

std::string values(int n) {
  std::string s = "[";
  for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(i);
  return s + "]";
}

}  // namespace

TEST_F(RunTest, RunsThenSkipsCachedJobs) {
  auto cfg = config("basic", "workers: 2\nprotocols:\n  - {name: noop, value: [1, 2, 3]}\n");
  auto r = kvx("run " + quote(cfg));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("sweep 'basic': 3 jobs: 3 done (0 cached, 3 ran now), 0 failed, 0 pending"), std::string::npos)
      << r.out;
  auto before = query(db, "SELECT id, job_key, metrics FROM results ORDER BY id");
  ASSERT_EQ(before.size(), 3u);
  r = kvx("run " + quote(cfg));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("3 done (3 cached, 0 ran now)"), std::string::npos) << r.out;
  EXPECT_EQ(query(db, "SELECT id, job_key, metrics FROM results ORDER BY id"), before);
  EXPECT_EQ(query(db, "SELECT metrics FROM results ORDER BY metrics"),
            (std::vector<std::string>{"{\"value\":1.0}", "{\"value\":2.0}", "{\"value\":3.0}"}));
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM results WHERE git_commit IS NULL OR host IS NULL"), "0");
  // A second sweep overlapping the first reuses its rows.
  auto cfg2 = config("overlap", "protocols:\n  - {name: noop, value: [3, 4]}\n");
  r = kvx("run " + quote(cfg2));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("2 done (1 cached, 1 ran now)"), std::string::npos) << r.out;
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM results"), "4");
}

TEST_F(RunTest, DryRunWritesNothing) {
  auto cfg = config("dry", "protocols:\n  - {name: noop, value: [1, 2]}\n");
  auto r = kvx("run --dry-run " + quote(cfg));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("sweep 'dry': 2 jobs, 0 already done, 0 failed, 2 to run"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("protocol.value=1.0"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(db));
  ASSERT_EQ(kvx("run " + quote(cfg)).rc, 0);
  r = kvx("run --dry-run --format json " + quote(cfg));
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["total"], 2);
  EXPECT_EQ(j["done"], 2);
  EXPECT_EQ(j["to_run"], 0);
  EXPECT_EQ(j["jobs"][0]["cached"], true);
}

TEST_F(RunTest, InvalidConfigWritesNoJobs) {
  auto good = config("good", "protocols: [{name: noop}]\n");
  ASSERT_EQ(kvx("run " + quote(good)).rc, 0);
  auto bad = config("bad", "protocols:\n  - {name: noop, value: [1, 2]}\nmodels:\n  - {name: m, path: missing}\n");
  auto r = kvx("run " + quote(bad));
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("kvx: error: " + bad + ":6:21: model 'm': model folder '" + dir + "/missing' does not exist"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM jobs"), "1");
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM sweeps"), "1");
  // On a fresh path no database appears at all.
  r = kvx("run --db fresh.db " + quote(bad));
  EXPECT_EQ(r.rc, 2);
  EXPECT_FALSE(fs::exists(dir + "/fresh.db"));
}

TEST_F(RunTest, RefusesForeignDatabaseUnchanged) {
  kvx::test::write_file(dir + "/notes.db", "just some text\n");
  auto cfg = config("x", "protocols: [{name: noop}]\n");
  auto r = kvx("run --db notes.db " + quote(cfg));
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("notes.db: not an SQLite database (refusing to touch it)"), std::string::npos) << r.out;
  EXPECT_EQ(kvx::test::read_file(dir + "/notes.db"), "just some text\n");
}

TEST_F(RunTest, FailingAndNanJobsAreRecordedWhileTheSweepGoesOn) {
  auto cfg = config("fails", "retries: 2\nworkers: 2\nprotocols:\n"
                             "  - {name: noop, value: [1, 2]}\n"
                             "include:\n  - {protocol.fail: true, protocol.value: 3}\n  - {protocol.nan: true, protocol.value: 0}\n");
  auto r = kvx("run " + quote(cfg));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_EQ(query(db, "SELECT status, attempts, failures, error FROM jobs ORDER BY status, error"),
            (std::vector<std::string>{"done|1|0|NULL", "done|1|0|NULL",
                                      "failed|3|3|metric value is NaN ('value')",
                                      "failed|3|3|noop: asked to fail"}));
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM results"), "2");
  auto s = kvx("status results/kvx.db --format json");
  ASSERT_EQ(s.rc, 0) << s.out;
  auto j = nlohmann::json::parse(s.out);
  EXPECT_EQ(j[0]["done"], 2);
  EXPECT_EQ(j[0]["failed"], 2);
  EXPECT_EQ(j[0]["failed_jobs"].size(), 2u);
  s = kvx("status results/kvx.db");
  EXPECT_NE(s.out.find("4 jobs: 2 done, 0 running, 2 failed, 0 pending"), std::string::npos) << s.out;
  EXPECT_NE(s.out.find("noop: asked to fail"), std::string::npos) << s.out;
  // --retry-failed runs them again (and they fail again).
  r = kvx("run --retry-failed " + quote(cfg));
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(query1(db, "SELECT MAX(attempts) FROM jobs"), "6");
}

TEST_F(RunTest, ResumeAfterKillNineRunsEveryJobExactlyOnce) {
  auto cfg = config("resume", "workers: 2\nprotocols:\n  - {name: noop, sleep_ms: 50, value: " + values(40) + "}\n");
  pid_t pid = spawn({"run", cfg});
  wait_for_results(12);
  kill(-pid, SIGKILL);  // the runner and its workers
  wait_rc(pid);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // orphaned workers are gone too
  auto before = query(db, "SELECT id, job_key, metrics, finished FROM results ORDER BY id");
  ASSERT_GE(before.size(), 12u);
  ASSERT_LT(before.size(), 40u) << "the run finished before the kill; make the jobs slower";
  auto r = kvx("run " + quote(cfg));
  ASSERT_EQ(r.rc, 0) << r.out;
  auto after = query(db, "SELECT id, job_key, metrics, finished FROM results ORDER BY id");
  ASSERT_EQ(after.size(), 40u);
  for (size_t i = 0; i < before.size(); ++i) EXPECT_EQ(after[i], before[i]);
  EXPECT_EQ(query1(db, "SELECT COUNT(DISTINCT job_key) FROM results"), "40");
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM jobs WHERE status='done'"), "40");
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM jobs WHERE failures>0"), "0");
}

TEST_F(RunTest, TwoRunnersOnOneDatabaseNeverShareAJob) {
  auto cfg = config("pair", "workers: 2\nprotocols:\n  - {name: noop, sleep_ms: 20, value: " + values(40) + "}\n");
  pid_t a = spawn({"run", cfg});
  pid_t b = spawn({"run", cfg});
  EXPECT_EQ(wait_rc(a), 0);
  EXPECT_EQ(wait_rc(b), 0);
  EXPECT_EQ(query1(db, "SELECT COUNT(*), COUNT(DISTINCT job_key) FROM results"), "40|40");
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM jobs WHERE attempts=1 AND status='done'"), "40");
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM sweeps"), "1");
}

TEST_F(RunTest, InterruptReturnsRunningJobsToPending) {
  auto cfg = config("stop", "workers: 2\nprotocols:\n  - {name: noop, sleep_ms: 300, value: " + values(20) + "}\n");
  pid_t pid = spawn({"run", cfg});
  wait_for_results(2);
  kill(-pid, SIGINT);  // Ctrl-C reaches the whole foreground group
  EXPECT_EQ(wait_rc(pid), 130);
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM jobs WHERE status='running'"), "0");
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM jobs WHERE failures>0"), "0");
  int done = count("SELECT COUNT(*) FROM results");
  EXPECT_LT(done, 20);
}

TEST_F(RunTest, ReportAndInjectionStrings) {
  auto cfg = config("rep", "protocols:\n  - {name: noop, value: [1, 2.5]}\n"
                           "methods:\n  - {name: fp16, key: none, value: none}\n");
  ASSERT_EQ(kvx("run " + quote(cfg)).rc, 0);
  auto r = kvx("report results/kvx.db --format csv --metric value");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(r.out, "method,protocol.value,value\nfp16,1.0,1.0000\nfp16,2.5,2.5000\n");
  for (const std::string evil : {"method=fp16' OR '1'='1", "method=x'; DROP TABLE results; --",
                                 "label=none'--"}) {
    r = kvx("report results/kvx.db --format csv --filter " + quote(evil));
    EXPECT_EQ(r.rc, 0) << r.out;
    EXPECT_EQ(r.out.find("fp16,"), std::string::npos) << evil << "\n" << r.out;
  }
  r = kvx("report results/kvx.db --sweep " + quote("rep' OR 1=1 --"));
  EXPECT_EQ(r.rc, 2);
  r = kvx("report results/kvx.db --filter " + quote("x' OR '1'='1=3"));
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("unknown field"), std::string::npos) << r.out;
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM results"), "2");
  r = kvx("report results/kvx.db --sweep rep --rows protocol.value --metric value --plot p.svg --x protocol.value");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(kvx::test::read_file(dir + "/p.svg").rfind("<svg", 0), 0u);
}
