// Crash consistency of `kvx run` (issue 13): a sweep of noop jobs is killed at random moments
// (SIGKILL of the runner and its workers, SIGINT of the group, SIGKILL of one worker alone), one
// seed per round, then resumed. After every kill and after the resume:
//   - PRAGMA integrity_check is ok;
//   - a job is 'done' exactly when it has a result row (a crash never leaves half a row);
//   - rows finished before a kill are byte-for-byte unchanged later (id, key, metrics, finished);
// after the resume every job is done exactly once, with the value its parameters ask for.
// Rounds: 20 / 6 / 6 by default, 60 / 20 / 20 with KVX_RELIABILITY_LONG=1. Each suite prints
// "reliability: ..." lines with its counts (rounds, kills, jobs checked, failures).
#include <gtest/gtest.h>
#include <signal.h>

#include <map>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "tests/reliability/reliability_util.h"
#include "core/common/remove_tree.h"

namespace fs = std::filesystem;
using kvx::test::query;
using kvx::test::query1;
using kvx::test::quote;
using kvx::test::run_cmd;

namespace {

struct Counts {
  int rounds = 0, kills = 0, jobs_checked = 0, rows_kept = 0, failures = 0;
};

#define RCHECK(c, cond, msg)                         \
  do {                                               \
    if (!(cond)) {                                   \
      ++(c).failures;                                \
      ADD_FAILURE() << "round " << round << ": " << msg; \
    }                                                \
  } while (0)

class CrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kvx::test::kvx_bin().empty()) GTEST_SKIP() << "KVX_BIN not set";
    if (kvx::rel::skip_this_run()) GTEST_SKIP() << "long variant: set KVX_RELIABILITY_LONG=1";
  }
  void new_round(int seed) {
    if (!dir.empty()) kvx::remove_tree(dir);
    dir = kvx::test::make_temp_dir();
    db = dir + "/results/kvx.db";
    log = dir + "/run.log";
    rng.seed(static_cast<uint32_t>(seed) * 2654435761u + 17u);
  }
  void TearDown() override {
    if (!dir.empty() && !HasFailure()) kvx::remove_tree(dir);
    else if (!dir.empty()) std::fprintf(stderr, "kept %s for inspection\n", dir.c_str());
  }
  // n noop jobs with values 0..n-1.
  std::string config(int n, int workers, int sleep_ms, int retries) {
    std::string vals = "[";
    for (int i = 0; i < n; ++i) vals += (i ? ", " : "") + std::to_string(i);
    vals += "]";
    std::string path = dir + "/crash.yaml";
    kvx::test::write_file(path, "name: crash\ndb: results/kvx.db\nworkers: " + std::to_string(workers) +
                                    "\nretries: " + std::to_string(retries) + "\nprotocols:\n  - {name: noop, sleep_ms: " +
                                    std::to_string(sleep_ms) + ", value: " + vals + "}\n");
    return path;
  }
  int results() {
    try {
      auto r = query1(db, "SELECT COUNT(*) FROM results");
      return r.empty() ? 0 : std::stoi(r);
    } catch (...) {
      return 0;
    }
  }
  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

  // key -> "id|metrics|finished" of every result row.
  std::map<std::string, std::string> snapshot() {
    std::map<std::string, std::string> m;
    if (!fs::exists(db)) return m;
    try {
      for (const auto& r : query(db, "SELECT job_key, id, metrics, finished FROM results")) {
        auto bar = r.find('|');
        m[r.substr(0, bar)] = r.substr(bar + 1);
      }
    } catch (const std::exception&) {
      // no schema yet (killed while creating it)
    }
    return m;
  }

  // Invariants that hold after any kill. Adds rows seen now to `kept` and checks old ones.
  void check_after_kill(Counts& c, int round, std::map<std::string, std::string>& kept) {
    if (!fs::exists(db)) return;
    std::string ic;
    try {
      ic = query1(db, "PRAGMA integrity_check");
    } catch (const std::exception& e) {
      ic = e.what();
    }
    RCHECK(c, ic == "ok", "integrity_check after kill: " << ic);
    bool has_schema = false;
    try {
      has_schema = query1(db, "SELECT COUNT(*) FROM sqlite_master WHERE name='results'") == "1";
    } catch (...) {
    }
    if (!has_schema) return;
    RCHECK(c, query1(db, "SELECT COUNT(*) FROM jobs j LEFT JOIN results r ON r.job_key=j.key WHERE "
                         "(j.status='done') <> (r.id IS NOT NULL)") == "0",
           "a done job without its row or a row of a job not done");
    auto now = snapshot();
    for (const auto& [k, v] : kept) {
      auto it = now.find(k);
      RCHECK(c, it != now.end() && it->second == v,
             "row of job " << k << " changed after a kill: was " << v << ", now " << (it == now.end() ? "<gone>" : it->second));
      ++c.rows_kept;
    }
    for (const auto& [k, v] : now) kept.emplace(k, v);
  }

  // After the final resume: all n jobs done exactly once, right values, kept rows unchanged.
  void check_final(Counts& c, int round, int n, const std::map<std::string, std::string>& kept, bool no_failures) {
    RCHECK(c, query1(db, "PRAGMA integrity_check") == "ok", "integrity_check after resume");
    RCHECK(c, query1(db, "SELECT COUNT(*), COUNT(DISTINCT job_key) FROM results") ==
                  std::to_string(n) + "|" + std::to_string(n),
           "results: " << query1(db, "SELECT COUNT(*), COUNT(DISTINCT job_key) FROM results") << ", want " << n);
    RCHECK(c, query1(db, "SELECT COUNT(*) FROM jobs WHERE status='done'") == std::to_string(n),
           "done jobs: " << query1(db, "SELECT group_concat(status) FROM jobs"));
    RCHECK(c, query1(db, "SELECT COUNT(*) FROM jobs") == std::to_string(n), "jobs in the table");
    RCHECK(c, query1(db, "SELECT COUNT(*) FROM sweeps") == "1", "one sweep");
    if (no_failures) RCHECK(c, query1(db, "SELECT COALESCE(SUM(failures),0) FROM jobs") == "0", "failures counted");
    std::set<double> seen;
    for (const auto& row : query(db, "SELECT r.metrics, j.job FROM results r JOIN jobs j ON j.key=r.job_key")) {
      auto bar = row.find('|');
      auto m = nlohmann::json::parse(row.substr(0, bar));
      auto j = nlohmann::json::parse(row.substr(bar + 1));
      const double want = j.at("protocol").at("value").get<double>();
      RCHECK(c, m.at("value").get<double>() == want, "metrics " << m.dump() << " for value " << want);
      seen.insert(want);
      ++c.jobs_checked;
    }
    RCHECK(c, static_cast<int>(seen.size()) == n, "distinct values " << seen.size());
    auto now = snapshot();
    for (const auto& [k, v] : kept) {
      auto it = now.find(k);
      RCHECK(c, it != now.end() && it->second == v, "row of job " << k << " changed by the resume");
      ++c.rows_kept;
    }
  }

  void print(const char* what, const Counts& c) {
    std::printf("reliability: %s: rounds=%d kills=%d jobs_checked=%d rows_kept_checked=%d failures=%d\n", what,
                c.rounds, c.kills, c.jobs_checked, c.rows_kept, c.failures);
    std::fflush(stdout);
    RecordProperty("rounds", c.rounds);
    RecordProperty("kills", c.kills);
    RecordProperty("failures", c.failures);
  }

  std::string dir, db, log;
  std::mt19937 rng;
};

}  // namespace

TEST_F(CrashTest, KillNineOfRunnerAndWorkersAtRandomMoments) {
  Counts c;
  const int n_rounds = kvx::rel::rounds(20, 60);
  for (int round = 1; round <= n_rounds; ++round) {
    new_round(round);
    const int n = uniform(10, 24);
    auto cfg = config(n, uniform(1, 3), uniform(5, 40), 2);
    std::map<std::string, std::string> kept;
    const int kills = uniform(1, 3);
    for (int k = 0; k < kills; ++k) {
      pid_t pid = kvx::rel::spawn_kvx(dir, {"run", cfg}, log);
      if (uniform(0, 3) == 0) {
        // Any moment, startup (schema creation, job insertion) included.
        std::this_thread::sleep_for(std::chrono::milliseconds(uniform(0, 1500)));
      } else {
        const int target = std::min(n - 1, results() + uniform(0, n / 2));
        for (int i = 0; i < 3000 && results() < target; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        std::this_thread::sleep_for(std::chrono::microseconds(uniform(0, 40000)));
      }
      kill(-pid, SIGKILL);
      kvx::rel::wait_rc(pid);
      kvx::rel::wait_group_gone(pid);
      ++c.kills;
      check_after_kill(c, round, kept);
    }
    auto r = run_cmd("cd " + quote(dir) + " && " + quote(kvx::test::kvx_bin()) + " run " + quote(cfg));
    RCHECK(c, r.rc == 0, "resume rc " << r.rc << ": " << r.out);
    check_final(c, round, n, kept, /*no_failures=*/true);
    ++c.rounds;
    std::printf("  round %d (seed %d): %d jobs, %d kill(s), %zu rows finished before a kill\n", round, round, n,
                kills, kept.size());
    std::fflush(stdout);
  }
  print("SIGKILL runner+workers (process group)", c);
  EXPECT_EQ(c.failures, 0);
  EXPECT_GE(c.rounds, 20);
}

TEST_F(CrashTest, CtrlCAtRandomMomentsStopsGracefully) {
  Counts c;
  const int n_rounds = kvx::rel::rounds(6, 20);
  for (int round = 1; round <= n_rounds; ++round) {
    new_round(1000 + round);
    const int n = uniform(12, 24);
    auto cfg = config(n, uniform(1, 3), uniform(20, 60), 2);
    std::map<std::string, std::string> kept;
    pid_t pid = kvx::rel::spawn_kvx(dir, {"run", cfg}, log);
    const int target = uniform(1, n / 2);
    for (int i = 0; i < 3000 && results() < target; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::this_thread::sleep_for(std::chrono::microseconds(uniform(0, 30000)));
    kill(-pid, SIGINT);  // Ctrl-C reaches the whole foreground group
    const int rc = kvx::rel::wait_rc(pid);
    kvx::rel::wait_group_gone(pid);
    ++c.kills;
    RCHECK(c, rc == 130 || (rc == 0 && results() == n), "Ctrl-C exit status " << rc);
    RCHECK(c, query1(db, "SELECT COUNT(*) FROM jobs WHERE status='running'") == "0", "running jobs left after Ctrl-C");
    RCHECK(c, query1(db, "SELECT COALESCE(SUM(failures),0) FROM jobs") == "0", "Ctrl-C counted as a failure");
    check_after_kill(c, round, kept);
    auto r = run_cmd("cd " + quote(dir) + " && " + quote(kvx::test::kvx_bin()) + " run " + quote(cfg));
    RCHECK(c, r.rc == 0, "resume rc " << r.rc << ": " << r.out);
    check_final(c, round, n, kept, /*no_failures=*/true);
    ++c.rounds;
  }
  print("SIGINT (graceful, exit 130)", c);
  EXPECT_EQ(c.failures, 0);
}

TEST_F(CrashTest, OneWorkerKilledAloneIsReplacedAndItsJobRetried) {
  Counts c;
  const int n_rounds = kvx::rel::rounds(6, 20);
  int worker_kills = 0;
  for (int round = 1; round <= n_rounds; ++round) {
    new_round(2000 + round);
    const int n = uniform(12, 24);
    const int kills = uniform(1, 2);
    auto cfg = config(n, uniform(2, 3), uniform(20, 60), kills + 1);
    std::map<std::string, std::string> kept;
    pid_t pid = kvx::rel::spawn_kvx(dir, {"run", cfg}, log);
    int done_kills = 0;
    for (int k = 0; k < kills; ++k) {
      const int target = std::min(n - 2, results() + uniform(1, n / 3));
      for (int i = 0; i < 3000 && results() < target; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      std::this_thread::sleep_for(std::chrono::microseconds(uniform(0, 20000)));
      auto workers = kvx::rel::children_of(pid);
      if (workers.empty()) break;
      kill(workers[static_cast<size_t>(uniform(0, int(workers.size()) - 1))], SIGKILL);
      ++done_kills;
      ++c.kills;
    }
    worker_kills += done_kills;
    const int rc = kvx::rel::wait_rc(pid);
    RCHECK(c, rc == 0, "runner exit status " << rc << " after " << done_kills << " worker kill(s): "
                                             << kvx::test::read_file(log));
    check_after_kill(c, round, kept);
    // A job whose worker died counts one failure and is retried; the sweep still finishes.
    const int failures = std::stoi(query1(db, "SELECT COALESCE(SUM(failures),0) FROM jobs"));
    RCHECK(c, failures <= done_kills, failures << " failures for " << done_kills << " worker kills");
    check_final(c, round, n, kept, /*no_failures=*/false);
    ++c.rounds;
  }
  print("SIGKILL of one worker alone", c);
  EXPECT_EQ(c.failures, 0);
  EXPECT_GT(worker_kills, 0);
}
