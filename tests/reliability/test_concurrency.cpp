// Concurrency (issue 13): 4 `kvx run` processes of one sweep on one database at once, plus a
// `kvx report` / `kvx status` reader loop and a reader that holds a read transaction open.
//   - no double claims: every job computed exactly once (one result row, attempts == 1);
//   - no "database is locked" / "busy" reaches the user (runner logs, reader output, exit codes);
//   - a long read transaction does not stop the writers (WAL): rows keep arriving meanwhile.
// Prints "reliability: concurrency: ..." with its counts.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <thread>

#include "tests/reliability/reliability_util.h"
#include "core/common/remove_tree.h"

namespace fs = std::filesystem;
using kvx::test::query1;
using kvx::test::quote;
using kvx::test::run_cmd;

namespace {

bool mentions_lock(const std::string& s) {
  for (const char* w : {"locked", "busy", "SQLITE_BUSY"})
    if (s.find(w) != std::string::npos) return true;
  return false;
}

int count_rows(sqlite3* h) {
  sqlite3_stmt* st = nullptr;
  int n = -1;
  if (sqlite3_prepare_v2(h, "SELECT COUNT(*) FROM results", -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    n = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return n;
}

}  // namespace

TEST(ConcurrencyTest, FourRunnersAndReadersOnOneDatabase) {
  if (kvx::test::kvx_bin().empty()) GTEST_SKIP() << "KVX_BIN not set";
  if (kvx::rel::skip_this_run()) GTEST_SKIP() << "long variant: set KVX_RELIABILITY_LONG=1";
  const int n_rounds = kvx::rel::rounds(2, 6);
  const int n = 64;
  int failures = 0, reader_runs = 0, runner_runs = 0, jobs_checked = 0, held_reads = 0;
  double worst_reader_s = 0;
  auto fail = [&](const std::string& m) {
    ++failures;
    ADD_FAILURE() << m;
  };
  for (int round = 1; round <= n_rounds; ++round) {
    const std::string dir = kvx::test::make_temp_dir();
    const std::string db = dir + "/results/kvx.db";
    std::string vals = "[";
    for (int i = 0; i < n; ++i) vals += (i ? ", " : "") + std::to_string(i);
    kvx::test::write_file(dir + "/c.yaml", "name: conc\ndb: results/kvx.db\nworkers: 2\nprotocols:\n"
                                           "  - {name: noop, sleep_ms: " + std::to_string(30 + 10 * round) +
                                               ", value: " + vals + "]}\n");
    std::vector<pid_t> runners;
    for (int i = 0; i < 4; ++i)
      runners.push_back(kvx::rel::spawn_kvx(dir, {"run", "c.yaml"}, dir + "/run" + std::to_string(i) + ".log"));
    std::atomic<bool> stop{false};
    std::string reader_problems;
    std::thread reader([&] {
      for (int i = 0; !stop; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        auto r = run_cmd("cd " + quote(dir) + " && " + quote(kvx::test::kvx_bin()) +
                         (i % 2 ? " status results/kvx.db" : " report results/kvx.db --format csv --metric value"));
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        worst_reader_s = std::max(worst_reader_s, s);
        ++reader_runs;
        // Before the first runner created the file there is nothing to read; that is the only
        // acceptable error.
        const bool early = r.out.find("no such database") != std::string::npos ||
                           r.out.find("no sweeps") != std::string::npos;
        if ((r.rc != 0 && !early) || mentions_lock(r.out))
          reader_problems += "reader rc " + std::to_string(r.rc) + ": " + r.out + "\n";
      }
    });
    // A reader holding a read transaction open for a second: writers go on (WAL).
    for (int i = 0; i < 3000 && !fs::exists(db); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    for (int i = 0; i < 3000; ++i) {
      std::string c;
      try {
        c = query1(db, "SELECT COUNT(*) FROM results");
      } catch (...) {
      }
      if (!c.empty() && std::stoi(c) >= 4) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    sqlite3* hold = nullptr;
    sqlite3* look = nullptr;
    sqlite3_open_v2(db.c_str(), &hold, SQLITE_OPEN_READONLY, nullptr);
    sqlite3_open_v2(db.c_str(), &look, SQLITE_OPEN_READONLY, nullptr);
    sqlite3_busy_timeout(hold, 5000);
    sqlite3_busy_timeout(look, 5000);
    sqlite3_exec(hold, "BEGIN", nullptr, nullptr, nullptr);
    const int at_start = count_rows(hold);
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    const int seen_by_holder = count_rows(hold);
    const int seen_outside = count_rows(look);
    sqlite3_exec(hold, "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_close(hold);
    sqlite3_close(look);
    ++held_reads;
    if (seen_by_holder != at_start) fail("the held read transaction saw a changing snapshot");
    if (at_start < n && seen_outside <= at_start)
      fail("writers made no progress during a 1 s read transaction: " + std::to_string(at_start) + " -> " +
           std::to_string(seen_outside));
    for (size_t i = 0; i < runners.size(); ++i) {
      const int rc = kvx::rel::wait_rc(runners[i]);
      ++runner_runs;
      const std::string out = kvx::test::read_file(dir + "/run" + std::to_string(i) + ".log");
      if (rc != 0) fail("runner " + std::to_string(i) + " rc " + std::to_string(rc) + ": " + out);
      if (mentions_lock(out)) fail("runner " + std::to_string(i) + " shows a lock error: " + out);
    }
    stop = true;
    reader.join();
    if (!reader_problems.empty()) fail(reader_problems);
    if (query1(db, "PRAGMA integrity_check") != "ok") fail("integrity_check");
    const std::string counts = query1(db, "SELECT COUNT(*), COUNT(DISTINCT job_key) FROM results");
    if (counts != std::to_string(n) + "|" + std::to_string(n)) fail("results " + counts);
    // Exactly one claim per job: attempts counts claims.
    const std::string claims = query1(db, "SELECT COUNT(*), SUM(attempts), MAX(attempts), SUM(failures) FROM jobs "
                                          "WHERE status='done'");
    if (claims != std::to_string(n) + "|" + std::to_string(n) + "|1|0") fail("claims: " + claims);
    jobs_checked += n;
    if (query1(db, "SELECT COUNT(*) FROM sweeps") != "1") fail("sweeps");
    if (!HasFailure()) kvx::remove_tree(dir);
  }
  std::printf("reliability: concurrency: rounds=%d runners=%d (4 per round, 2 workers each) reader_runs=%d "
              "held_read_transactions=%d jobs_checked=%d worst_reader_seconds=%.2f failures=%d\n",
              n_rounds, runner_runs, reader_runs, held_reads, jobs_checked, worst_reader_s, failures);
  EXPECT_EQ(failures, 0);
}
