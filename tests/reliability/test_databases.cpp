// Numerics, hostile databases and SQL injection through the CLI (issue 13).
//   Numerics: a model whose weights hold NaN (a temp copy of tiny-gpt2 with ln_f set to NaN) gives
//     a job recorded `failed` with the reason; no number of it reaches results or any report.
//   Databases: newer schema version, a non-kvx SQLite file, a read-only location, a full disk
//     (RLIMIT_FSIZE): `kvx run/status/report` give a clear error and the file is unchanged.
//   Injection: every user string (filters, sweep names, fields, config names) reaches SQL only
//     as bound parameters: injection strings change nothing and match nothing; a source lint
//     lists every SQL text that is not a literal.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <regex>

#include <nlohmann/json.hpp>

#include "tests/reliability/reliability_util.h"
#include "core/common/remove_tree.h"

namespace fs = std::filesystem;
using kvx::test::query;
using kvx::test::query1;
using kvx::test::quote;
using kvx::test::read_file;
using kvx::test::write_file;

namespace {

class DbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kvx::test::kvx_bin().empty()) GTEST_SKIP() << "KVX_BIN not set";
    if (kvx::rel::skip_this_run()) GTEST_SKIP() << "not a long variant";
    dir = kvx::test::make_temp_dir();
  }
  void TearDown() override {
    if (!dir.empty()) {
      run("chmod -R u+rwX " + quote(dir));
      kvx::remove_tree(dir);
    }
  }
  kvx::test::CmdResult run(const std::string& cmd) { return kvx::test::run_cmd("cd " + quote(dir) + " && " + cmd); }
  kvx::test::CmdResult kvx(const std::string& args) { return run(quote(kvx::test::kvx_bin()) + " " + args); }
  std::string noop_config(const std::string& name, const std::string& values) {
    write_file(dir + "/" + name + ".yaml",
               "name: " + name + "\ndb: results/kvx.db\nworkers: 1\nprotocols:\n  - {name: noop, value: " + values + "}\n");
    return name + ".yaml";
  }
  // The database files of a directory: name -> size and content hash. A -shm (reader index)
  // is left out, and so is an empty -wal (SQLite may create both when it opens a WAL database).
  std::map<std::string, std::string> files(const std::string& d) {
    std::map<std::string, std::string> m;
    for (const auto& e : fs::directory_iterator(d)) {
      const std::string name = e.path().filename().string();
      if (!e.is_regular_file() || name.size() > 4 && name.compare(name.size() - 4, 4, "-shm") == 0) continue;
      const std::string bytes = read_file(e.path().string());
      if (bytes.empty() && name.size() > 4 && name.compare(name.size() - 4, 4, "-wal") == 0) continue;
      m[name] = std::to_string(bytes.size()) + " bytes, hash " + std::to_string(std::hash<std::string>()(bytes));
    }
    return m;
  }
  static void sql(const std::string& db, const std::string& text) {
    sqlite3* h = nullptr;
    ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
    char* err = nullptr;
    int rc = sqlite3_exec(h, text.c_str(), nullptr, nullptr, &err);
    EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "");
    sqlite3_free(err);
    sqlite3_close(h);
  }
  std::string dir;
};

// Sets every element of the first tensor whose name ends with `suffix` to NaN.
void poison(const std::string& file, const std::string& suffix) {
  std::string bytes = read_file(file);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | uint8_t(bytes[size_t(i)]);
  auto h = nlohmann::json::parse(bytes.substr(8, hlen));
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& k = it.key();
    if (k.size() < suffix.size() || k.compare(k.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string dt = it.value()["dtype"];
    const uint64_t b = it.value()["data_offsets"][0], e = it.value()["data_offsets"][1];
    std::string nan = dt == "F32" ? std::string("\x00\x00\xc0\x7f", 4) : std::string("\xc0\x7f", 2);  // F32 / BF16
    if (dt == "F16") nan = std::string("\x00\x7e", 2);
    for (uint64_t p = 8 + hlen + b; p < 8 + hlen + e; p += nan.size()) bytes.replace(p, nan.size(), nan);
    write_file(file, bytes);
    return;
  }
  FAIL() << "no tensor ending in " << suffix << " in " << file;
}

}  // namespace

TEST_F(DbTest, NanLogitsAreAFailedJobNeverANumber) {
  const std::string src = std::string(KVX_SOURCE_DIR) + "/data/models/tiny-gpt2";
  fs::copy(src, dir + "/nan-gpt2");
  poison(dir + "/nan-gpt2/model.safetensors", "ln_f.weight");
  write_file(dir + "/text.txt", read_file(std::string(KVX_SOURCE_DIR) + "/data/wikitext-2/test.txt").substr(0, 20000));
  write_file(dir + "/nan.yaml", "name: nan\ndb: results/kvx.db\nworkers: 1\nretries: 0\n"
                                "models:\n  - {name: good, path: " + src + "}\n  - {name: poisoned, path: nan-gpt2}\n"
                                "datasets: [{name: text, path: text.txt}]\n"
                                "protocols: [{name: perplexity, seq_len: 64, chunk: 32, max_windows: 2}]\n");
  auto r = kvx("run nan.yaml");
  EXPECT_EQ(r.rc, 1) << r.out;
  const std::string db = dir + "/results/kvx.db";
  auto rows = query(db, "SELECT model, status, error FROM jobs ORDER BY model");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].rfind("good|done|", 0), 0u) << rows[0];
  EXPECT_EQ(rows[1].rfind("poisoned|failed|", 0), 0u) << rows[1];
  EXPECT_NE(rows[1].find("NaN/Inf"), std::string::npos) << rows[1];
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM results r JOIN jobs j ON j.key=r.job_key WHERE j.model='poisoned'"), "0");
  int reports = 0;
  for (const char* fmt : {"csv", "md", "json", "latex"}) {
    auto rep = kvx(std::string("report results/kvx.db --rows model --metric ppl --format ") + fmt);
    ++reports;
    EXPECT_EQ(rep.rc, 0) << rep.out;
    std::string low = rep.out;
    for (auto& ch : low) ch = char(std::tolower(ch));
    EXPECT_EQ(low.find("nan"), std::string::npos) << rep.out;
    EXPECT_EQ(low.find("inf"), std::string::npos) << rep.out;
    EXPECT_NE(rep.out.find("good"), std::string::npos) << rep.out;
    // The poisoned model shows as failed or not at all, never with a value.
    auto at = rep.out.find("poisoned");
    if (at != std::string::npos) {
      const std::string line = rep.out.substr(at, rep.out.find('\n', at) - at);
      EXPECT_EQ(std::regex_search(line, std::regex("[0-9]\\.[0-9]")), false) << line;
    }
  }
  auto st = kvx("status results/kvx.db");
  EXPECT_NE(st.out.find("NaN/Inf"), std::string::npos) << st.out;
  // `kvx eval` (no database) says so too, with a non-zero exit status.
  auto ev = kvx("eval --model nan-gpt2 --dataset text.txt --seq-len 64 --max-windows 1");
  EXPECT_NE(ev.rc, 0) << ev.out;
  EXPECT_NE(ev.out.find("NaN/Inf"), std::string::npos) << ev.out;
  std::printf("reliability: numerics: poisoned jobs=1 recorded failed, reports checked=%d, failures=%d\n", reports,
              HasFailure() ? 1 : 0);
}

TEST_F(DbTest, NewerSchemaAndForeignSqliteAreRefusedUnchanged) {
  int cases = 0;
  auto cfg = noop_config("s", "[1, 2]");
  ASSERT_EQ(kvx("run " + cfg).rc, 0);
  fs::create_directories(dir + "/newer");
  fs::create_directories(dir + "/foreign");
  fs::copy(dir + "/results/kvx.db", dir + "/newer/kvx.db");
  sql(dir + "/newer/kvx.db", "UPDATE schema_version SET version=version+7; PRAGMA wal_checkpoint(TRUNCATE);");
  sql(dir + "/foreign/kvx.db", "PRAGMA journal_mode=DELETE; CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);"
                               "INSERT INTO notes(body) VALUES('keep me');");
  for (const std::string which : {"newer", "foreign"}) {
    const auto before = files(dir + "/" + which);
    const std::string db = which + "/kvx.db";
    for (const std::string cmd : {"run --db " + db + " " + cfg, "status " + db, "report " + db + " --metric value",
                                  "run --dry-run --db " + db + " " + cfg}) {
      auto r = kvx(cmd);
      ++cases;
      EXPECT_EQ(r.rc, 2) << cmd << "\n" << r.out;
      EXPECT_EQ(r.out.rfind("kvx: error: ", 0), 0u) << cmd << "\n" << r.out;
      if (which == "newer") EXPECT_NE(r.out.find("newer than this kvx supports"), std::string::npos) << r.out;
      else EXPECT_NE(r.out.find("not a kvx database"), std::string::npos) << r.out;
      EXPECT_EQ(files(dir + "/" + which), before) << which << " changed by: kvx " << cmd;
    }
  }
  std::printf("reliability: databases (newer schema, foreign SQLite): commands tried=%d failures=%d\n", cases,
              HasFailure() ? 1 : 0);
}

TEST_F(DbTest, ReadOnlyLocationIsAClearErrorAndChangesNothing) {
  // Root ignores file modes: run kvx as nobody then (setpriv), or skip.
  std::string as = "";
  if (geteuid() == 0) {
    if (run("command -v setpriv >/dev/null").rc != 0) GTEST_SKIP() << "root without setpriv: cannot test modes";
    as = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
    if (run(as + quote(kvx::test::kvx_bin()) + " --version").rc != 0)
      GTEST_SKIP() << "nobody cannot execute " << kvx::test::kvx_bin();
  }
  auto cfg = noop_config("ro", "[1, 2]");
  ASSERT_EQ(kvx("run " + cfg).rc, 0);
  auto cfg2 = noop_config("ro2", "[3, 4]");
  run("chmod -R a+rX " + quote(dir) + " && chmod 0555 results && chmod 0444 results/*");
  const auto before = files(dir + "/results");
  int cases = 0;
  for (const std::string cmd : {"run " + cfg2, "run " + cfg}) {
    auto r = run(as + quote(kvx::test::kvx_bin()) + " " + cmd);
    ++cases;
    EXPECT_EQ(r.rc, 2) << cmd << "\n" << r.out;
    EXPECT_EQ(r.out.rfind("kvx: error: ", 0), 0u) << r.out;
    EXPECT_NE(r.out.find("kvx.db"), std::string::npos) << r.out;
    EXPECT_EQ(files(dir + "/results"), before);
  }
  // Reading a read-only database works or fails clearly; it never changes it.
  for (const std::string cmd : {"status results/kvx.db", "report results/kvx.db --metric value"}) {
    auto r = run(as + quote(kvx::test::kvx_bin()) + " " + cmd);
    ++cases;
    EXPECT_TRUE(r.rc == 0 || r.out.rfind("kvx: error: ", 0) == 0) << cmd << "\n" << r.out;
    EXPECT_LT(r.rc, 128) << r.out;
    EXPECT_EQ(files(dir + "/results"), before);
  }
  // A fresh database in a read-only folder.
  auto r = run(as + quote(kvx::test::kvx_bin()) + " run --db results/new.db " + cfg);
  ++cases;
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_EQ(r.out.rfind("kvx: error: ", 0), 0u) << r.out;
  EXPECT_FALSE(fs::exists(dir + "/results/new.db"));
  std::printf("reliability: databases (read-only location): commands tried=%d failures=%d\n", cases,
              HasFailure() ? 1 : 0);
}

TEST_F(DbTest, FullDiskIsAClearErrorAndKeepsFinishedRows) {
  // RLIMIT_FSIZE (ulimit -f) stands in for a full disk: writes beyond the limit fail with EFBIG
  // (SIGXFSZ ignored), which SQLite reports like ENOSPC. Works unprivileged.
  auto cfg = noop_config("full", "[1, 2, 3]");
  ASSERT_EQ(kvx("run " + cfg).rc, 0);
  const std::string db = dir + "/results/kvx.db";
  sql(db, "PRAGMA wal_checkpoint(TRUNCATE);");
  const auto rows_before = query(db, "SELECT id, job_key, metrics, finished FROM results ORDER BY id");
  std::string vals = "[";
  for (int i = 100; i < 400; ++i) vals += (i > 100 ? ", " : "") + std::to_string(i);
  auto big = noop_config("big", vals + "]");
  // Limit: the database's current size rounded up to 1 KiB blocks, plus 4 KiB: the WAL of a
  // 300-job sweep does not fit.
  const auto size = fs::file_size(db);
  const std::string blocks = std::to_string(size / 1024 + 4);
  auto r = run("trap '' XFSZ; ulimit -f " + blocks + " && " + quote(kvx::test::kvx_bin()) + " run " + big);
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_LT(r.rc, 128) << "crashed: " << r.out;
  EXPECT_NE(r.out.find("kvx: error: "), std::string::npos) << r.out;
  EXPECT_TRUE(r.out.find("disk is full") != std::string::npos || r.out.find("disk I/O error") != std::string::npos)
      << r.out;
  EXPECT_EQ(query1(db, "PRAGMA integrity_check"), "ok");
  EXPECT_EQ(query(db, "SELECT id, job_key, metrics, finished FROM results WHERE id <= 3 ORDER BY id"), rows_before);
  // With space again the sweep completes and the old rows are still the same.
  r = kvx("run " + big);
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(query1(db, "SELECT COUNT(*) FROM results"), "303");
  EXPECT_EQ(query(db, "SELECT id, job_key, metrics, finished FROM results WHERE id <= 3 ORDER BY id"), rows_before);
  std::printf("reliability: databases (full disk via ulimit -f %s KiB): failures=%d\n", blocks.c_str(),
              HasFailure() ? 1 : 0);
}

TEST_F(DbTest, InjectionStringsReachSqlOnlyAsParameters) {
  const std::vector<std::string> evil = {
      "x' OR '1'='1", "x'; DROP TABLE results; --", "x\"; DELETE FROM jobs; --", "') OR 1=1 --",
      "%' OR 1 --",   "x' UNION SELECT name FROM sqlite_master --", "\\'; --", "x'||(SELECT 1)||'"};
  // Names in the config itself carry the strings into the database.
  write_file(dir + "/inj.yaml", "name: \"inj' OR 1=1; DROP TABLE jobs; --\"\ndb: results/kvx.db\nprotocols:\n"
                                "  - {name: noop, value: [1, 2]}\nmethods:\n"
                                "  - {name: \"m'; DROP TABLE results; --\", key: none, value: none}\n");
  auto r = kvx("run inj.yaml");
  ASSERT_EQ(r.rc, 0) << r.out;
  const std::string db = dir + "/results/kvx.db";
  EXPECT_EQ(query1(db, "SELECT name FROM sweeps"), "inj' OR 1=1; DROP TABLE jobs; --");
  const auto tables = query(db, "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name");
  const auto rows = query(db, "SELECT * FROM results ORDER BY id");
  int tried = 0;
  auto unchanged = [&] {
    EXPECT_EQ(query(db, "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"), tables);
    EXPECT_EQ(query(db, "SELECT * FROM results ORDER BY id"), rows);
  };
  // Each string once per option (kvx starts in about a second; the options rotate over strings).
  const std::vector<std::string> fields = {"method", "label", "model", "protocol.value", "sweep"};
  const std::vector<std::string> opts = {"--sweep", "--rows", "--cols", "--metric", "--baseline"};
  for (size_t i = 0; i < evil.size(); ++i) {
    const std::string& e = evil[i];
    const std::string& field = fields[i % fields.size()];
    auto out = kvx("report results/kvx.db --format csv --metric value --filter " + quote(field + "=" + e) +
                   " --filter " + quote(fields[(i + 2) % fields.size()] + "=" + e));
    ++tried;
    EXPECT_LT(out.rc, 3) << out.out;
    EXPECT_EQ(out.out.find(",1.0000"), std::string::npos) << field << "=" << e << "\n" << out.out;
    const std::string& opt = opts[i % opts.size()];
    out = kvx("report results/kvx.db --format csv " + opt + " " + quote(e));
    ++tried;
    EXPECT_LT(out.rc, 3) << out.out;
    EXPECT_EQ(out.out.find(",1.0000"), std::string::npos) << opt << " " << e << "\n" << out.out;
    if (i % 3 == 0) {
      auto st = kvx("status results/kvx.db --sweep " + quote(e));
      ++tried;
      EXPECT_LT(st.rc, 3) << st.out;
    }
  }
  unchanged();
  // The real (quote-laden) names do match, as plain strings.
  auto ok = kvx("report results/kvx.db --format csv --metric value --sweep " + quote("inj' OR 1=1; DROP TABLE jobs; --") +
                " --filter " + quote("method=m'; DROP TABLE results; --"));
  EXPECT_EQ(ok.rc, 0) << ok.out;
  EXPECT_NE(ok.out.find(",1.0000"), std::string::npos) << ok.out;
  unchanged();
  std::printf("reliability: injection: strings=%zu invocations=%d failures=%d\n", evil.size(), tried,
              HasFailure() ? 1 : 0);
}

// Every SQL text handed to prepare()/exec() is a literal, or is in this reviewed list of texts
// built from constants only. A new non-literal SQL site fails here until someone checks that no
// user string reaches it (user strings must be bound: ?1, ?2, ...).
TEST(SqlLint, NoUserStringIsSplicedIntoSql) {
  const std::vector<std::string> reviewed = {
      "kMigrations[i]",                         // store.cpp: schema migrations (constants)
      "(\"SELECT j.key \" + upgrade_where",  // merge.cpp: built from a constant CASE expression
  };
  const std::regex call(R"((?:\.|->)(?:prepare|exec)\(\s*([^)\n]*))");
  int sites = 0, non_literal = 0;
  std::string bad;
  for (const std::string sub : {"core", "apps", "experiments"}) {
    for (const auto& e : fs::recursive_directory_iterator(std::string(KVX_SOURCE_DIR) + "/" + sub)) {
      const auto ext = e.path().extension().string();
      if (ext != ".cpp" && ext != ".h") continue;
      const std::string text = read_file(e.path().string());
      if (text.find("sqlite") == std::string::npos && text.find("sql::") == std::string::npos &&
          text.find("db_->") == std::string::npos && text.find("db.prepare") == std::string::npos)
        continue;
      for (std::sregex_iterator it(text.begin(), text.end(), call), end; it != end; ++it) {
        std::string arg = (*it)[1].str();
        while (!arg.empty() && std::isspace(static_cast<unsigned char>(arg.front()))) arg.erase(0, 1);
        if (arg.empty() && e.path().filename() == "sqlite_db.h") continue;  // declarations
        ++sites;
        if (arg.empty() || arg[0] == '"' || arg.rfind("R\"", 0) == 0) continue;  // literal (maybe on the next line)
        if (arg.rfind("const char*", 0) == 0 || arg.rfind("const std::string&", 0) == 0) continue;  // the wrappers
        ++non_literal;
        bool ok = false;
        for (const auto& r : reviewed) ok |= arg.rfind(r, 0) == 0;
        if (!ok) bad += e.path().string() + ": " + arg + "\n";
      }
    }
  }
  std::printf("reliability: sql lint: prepare/exec sites=%d non-literal (reviewed)=%d unreviewed=%d\n", sites,
              non_literal, bad.empty() ? 0 : 1);
  EXPECT_TRUE(bad.empty()) << "SQL text built at run time; bind user strings instead:\n" << bad;
}
