#include "core/store/store.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>

#include "core/common/error.h"
#include "core/store/sqlite_db.h"

namespace kvx {

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

static std::string host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

std::string worker_identity() { return host_name() + ":" + std::to_string(getpid()); }

namespace {

// A worker on this host whose process is gone cannot be heart-beating: reclaim at once
// instead of waiting for the lease (a kill -9'd sweep resumes immediately).
bool worker_is_dead_here(const std::string& worker) {
  auto colon = worker.rfind(':');
  if (colon == std::string::npos) return false;
  if (worker.substr(0, colon) != host_name()) return false;
  long pid = std::strtol(worker.c_str() + colon + 1, nullptr, 10);
  if (pid <= 0) return false;
  return kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

// Schema migrations: entry i brings the schema from version i to i+1.
const char* const kMigrations[] = {
    R"SQL(
CREATE TABLE kvx_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO kvx_meta(key, value) VALUES('application', 'kvx');
CREATE TABLE schema_version(version INTEGER NOT NULL);
INSERT INTO schema_version(version) VALUES(0);
CREATE TABLE sweeps(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  config_path TEXT,
  config_text TEXT,
  created REAL NOT NULL,
  updated REAL NOT NULL);
CREATE TABLE jobs(
  key TEXT PRIMARY KEY,
  job TEXT NOT NULL,
  model TEXT, dataset TEXT, protocol TEXT, method TEXT, label TEXT,
  params TEXT NOT NULL,
  model_path TEXT,
  cost REAL NOT NULL DEFAULT 1,
  status TEXT NOT NULL CHECK(status IN ('pending','running','done','failed')),
  attempts INTEGER NOT NULL DEFAULT 0,
  failures INTEGER NOT NULL DEFAULT 0,
  retries INTEGER NOT NULL DEFAULT 0,
  worker TEXT,
  heartbeat REAL,
  error TEXT,
  created REAL NOT NULL,
  updated REAL NOT NULL);
CREATE INDEX jobs_status ON jobs(status);
CREATE TABLE sweep_jobs(
  sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
  job_key TEXT NOT NULL REFERENCES jobs(key),
  PRIMARY KEY(sweep_id, job_key));
CREATE INDEX sweep_jobs_key ON sweep_jobs(job_key);
CREATE TABLE results(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_key TEXT NOT NULL UNIQUE REFERENCES jobs(key),
  metrics TEXT NOT NULL,
  started REAL, finished REAL, seconds REAL,
  worker TEXT, host TEXT, gpu TEXT, torch_version TEXT, cuda_version TEXT,
  git_commit TEXT, kvx_version TEXT);
CREATE TABLE file_hashes(
  path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);
)SQL",
};
constexpr int kNumMigrations = sizeof(kMigrations) / sizeof(kMigrations[0]);
static_assert(kNumMigrations == Store::kSchemaVersion, "one migration per schema version");

bool file_exists(const std::string& p, int64_t* size) {
  struct stat st {};
  if (stat(p.c_str(), &st) != 0) return false;
  if (size) *size = st.st_size;
  return true;
}

}  // namespace

Store::Store(const std::string& path, Access access) : path_(path), read_only_(access == Access::ReadOnly) {
  int64_t size = 0;
  bool existed = file_exists(path, &size);
  if (read_only_ && !existed) throw error("{}: no such database", path);
  if (existed && size > 0) {
    // Look at the header ourselves: SQLite would happily "open" any file and fail later.
    std::ifstream in(path, std::ios::binary);
    char head[16] = {0};
    in.read(head, 16);
    if (!in || std::memcmp(head, "SQLite format 3\0", 16) != 0)
      throw error("{}: not an SQLite database (refusing to touch it)", path);
  }
  db_ = std::make_unique<sql::Db>(path, read_only_);
  // Even a 0-byte file may hold a schema: in WAL mode it lives in the -wal file until the first
  // checkpoint, so ask SQLite rather than the file size.
  check_existing(existed);
  if (!read_only_) {
    db_->exec("PRAGMA journal_mode=WAL");
    db_->exec("PRAGMA synchronous=NORMAL");
    db_->exec("PRAGMA foreign_keys=ON");
    migrate();
  }
}

Store::~Store() = default;

// Read-only checks before anything is written to an existing file.
void Store::check_existing(bool file_existed) {
  if (!file_existed) return;
  auto tables = db_->prepare("SELECT name FROM sqlite_master WHERE type='table'");
  bool has_meta = false, any = false;
  while (tables.step()) {
    any = true;
    if (tables.text(0) == "kvx_meta") has_meta = true;
  }
  if (!any) {
    // An empty SQLite file (or one another runner is creating right now): read-only views see
    // no sweeps; a writer creates the schema in it.
    empty_ = read_only_;
    return;
  }
  bool is_kvx = false;
  if (has_meta) {
    auto st = db_->prepare("SELECT value FROM kvx_meta WHERE key='application'");
    is_kvx = st.step() && st.text(0) == "kvx";
  }
  if (!is_kvx) throw error("{}: an SQLite database but not a kvx database (refusing to touch it)", path_);
  auto v = db_->prepare("SELECT MAX(version) FROM schema_version");
  int64_t version = v.step() ? v.int64(0) : 0;
  if (version > kSchemaVersion)
    throw error("{}: database schema version {} is newer than this kvx supports ({}); use a newer kvx",
                path_, version, kSchemaVersion);
  if (read_only_ && version < kSchemaVersion)
    throw error("{}: database schema version {} is older than {}; run `kvx run` once to migrate it",
                path_, version, kSchemaVersion);
}

void Store::migrate() {
  db_->immediate([&] {
    int64_t version = 0;
    {
      auto t = db_->prepare("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'");
      if (t.step()) {
        auto v = db_->prepare("SELECT MAX(version) FROM schema_version");
        version = v.step() ? v.int64(0) : 0;
      }
    }
    if (version > kSchemaVersion)
      throw error("{}: database schema version {} is newer than this kvx supports ({})", path_, version,
                  kSchemaVersion);
    for (int64_t i = version; i < kSchemaVersion; ++i) db_->exec(kMigrations[i]);
    if (version < kSchemaVersion) {
      auto st = db_->prepare("UPDATE schema_version SET version=?1");
      st.bind(1, static_cast<int64_t>(kSchemaVersion)).run();
    }
  });
}

int64_t Store::upsert_sweep(const std::string& name, const std::string& config_path,
                            const std::string& config_text, const std::vector<JobSpec>& jobs, int retries,
                            bool retry_failed) {
  int64_t id = 0;
  db_->immediate([&] {
    double now = now_seconds();
    {
      auto find = db_->prepare("SELECT id FROM sweeps WHERE name=?1");
      find.bind(1, name);
      if (find.step()) {
        id = find.int64(0);
        db_->prepare("UPDATE sweeps SET config_path=?1, config_text=?2, updated=?3 WHERE id=?4")
            .bind_all(config_path, config_text, now, id)
            .run();
      } else {
        db_->prepare("INSERT INTO sweeps(name, config_path, config_text, created, updated) VALUES(?1,?2,?3,?4,?4)")
            .bind_all(name, config_path, config_text, now)
            .run();
        id = db_->last_insert_rowid();
      }
    }
    db_->prepare("DELETE FROM sweep_jobs WHERE sweep_id=?1").bind(1, id).run();
    auto ins = db_->prepare(
        "INSERT OR IGNORE INTO jobs(key, job, model, dataset, protocol, method, label, params, model_path, cost,"
        " status, retries, created, updated) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,'pending',?11,?12,?12)");
    auto link = db_->prepare("INSERT OR IGNORE INTO sweep_jobs(sweep_id, job_key) VALUES(?1,?2)");
    // A raised retry budget revives failed jobs that have not used it up.
    auto upd = db_->prepare(
        "UPDATE jobs SET retries=?1, status=CASE WHEN status='failed' AND failures<=?1 THEN 'pending' "
        "ELSE status END, updated=?3 WHERE key=?2 AND status IN ('pending','failed')");
    for (const auto& j : jobs) {
      ins.reset();
      ins.bind_all(j.key, j.job.dump(), j.model, j.dataset, j.protocol, j.method, j.label, j.params.dump(),
                   j.model_path, j.cost, static_cast<int64_t>(retries), now)
          .run();
      link.reset();
      link.bind_all(id, j.key).run();
      upd.reset();
      upd.bind_all(static_cast<int64_t>(retries), j.key, now).run();
    }
    if (retry_failed)
      db_->prepare(
             "UPDATE jobs SET status='pending', failures=0, error=NULL, updated=?2 WHERE status='failed' AND key IN "
             "(SELECT job_key FROM sweep_jobs WHERE sweep_id=?1)")
          .bind_all(id, now)
          .run();
  });
  return id;
}

static SweepInfo sweep_from(const sql::Stmt& st) {
  SweepInfo s;
  s.id = st.int64(0);
  s.name = st.text(1);
  s.config_path = st.text(2);
  s.created = st.real(3);
  s.updated = st.real(4);
  return s;
}

std::optional<SweepInfo> Store::find_sweep(const std::string& name) {
  if (empty_) return std::nullopt;
  auto st = db_->prepare("SELECT id, name, config_path, created, updated FROM sweeps WHERE name=?1");
  st.bind(1, name);
  if (!st.step()) return std::nullopt;
  return sweep_from(st);
}

std::vector<SweepInfo> Store::sweeps() {
  if (empty_) return {};
  auto st = db_->prepare("SELECT id, name, config_path, created, updated FROM sweeps ORDER BY name");
  std::vector<SweepInfo> out;
  while (st.step()) out.push_back(sweep_from(st));
  return out;
}

std::map<std::string, std::string> Store::statuses(const std::vector<std::string>& keys) {
  std::map<std::string, std::string> out;
  if (empty_) {
    for (const auto& k : keys) out[k] = "";
    return out;
  }
  auto st = db_->prepare("SELECT status FROM jobs WHERE key=?1");
  for (const auto& k : keys) {
    st.reset();
    st.bind(1, k);
    out[k] = st.step() ? st.text(0) : "";
  }
  return out;
}

SweepCounts Store::counts(int64_t sweep_id) {
  SweepCounts c;
  auto st = db_->prepare(
      "SELECT j.status, COUNT(*) FROM jobs j JOIN sweep_jobs s ON s.job_key=j.key WHERE s.sweep_id=?1 "
      "GROUP BY j.status");
  st.bind(1, sweep_id);
  while (st.step()) {
    std::string s = st.text(0);
    int64_t n = st.int64(1);
    c.total += n;
    if (s == "done") c.done = n;
    else if (s == "running") c.running = n;
    else if (s == "failed") c.failed = n;
    else c.pending += n;
  }
  return c;
}

std::vector<JobState> Store::jobs(int64_t sweep_id, const std::string& status_filter) {
  auto st = db_->prepare(
      "SELECT j.key, j.model, j.dataset, j.protocol, j.method, j.label, j.params, j.status, "
      "COALESCE(j.error,''), COALESCE(j.worker,''), j.attempts, j.failures FROM jobs j "
      "JOIN sweep_jobs s ON s.job_key=j.key WHERE s.sweep_id=?1 AND (?2='' OR j.status=?2) ORDER BY j.key");
  st.bind_all(sweep_id, status_filter);
  std::vector<JobState> out;
  while (st.step()) {
    JobState j;
    j.key = st.text(0);
    j.model = st.text(1);
    j.dataset = st.text(2);
    j.protocol = st.text(3);
    j.method = st.text(4);
    j.label = st.text(5);
    j.params = nlohmann::json::parse(st.text(6));
    j.status = st.text(7);
    j.error = st.text(8);
    j.worker = st.text(9);
    j.attempts = st.int64(10);
    j.failures = st.int64(11);
    out.push_back(std::move(j));
  }
  return out;
}

double Store::throughput(int64_t sweep_id, double since) {
  auto st = db_->prepare(
      "SELECT COUNT(*), MIN(r.finished), MAX(r.finished) FROM results r JOIN sweep_jobs s ON s.job_key=r.job_key "
      "WHERE s.sweep_id=?1 AND r.finished>=?2");
  st.bind_all(sweep_id, since);
  if (!st.step() || st.int64(0) < 2) return 0;
  double span = st.real(2) - st.real(1);
  return span > 0 ? static_cast<double>(st.int64(0) - 1) / span : 0;
}

std::optional<ClaimedJob> Store::claim(int64_t sweep_id, const std::string& worker,
                                       const std::string& prefer_model_path, double lease_s) {
  std::optional<ClaimedJob> out;
  db_->immediate([&] {
    double now = now_seconds();
    {
      auto running = db_->prepare(
          "SELECT j.key, COALESCE(j.worker,''), COALESCE(j.heartbeat,0) FROM jobs j JOIN sweep_jobs s "
          "ON s.job_key=j.key WHERE s.sweep_id=?1 AND j.status='running'");
      running.bind(1, sweep_id);
      std::vector<std::pair<std::string, std::string>> stale;
      while (running.step()) {
        std::string w = running.text(1);
        if (running.real(2) < now - lease_s || worker_is_dead_here(w)) stale.emplace_back(running.text(0), w);
      }
      auto back = db_->prepare(
          "UPDATE jobs SET status='pending', worker=NULL, updated=?3 WHERE key=?1 AND status='running' AND "
          "COALESCE(worker,'')=?2");
      for (const auto& [k, w] : stale) {
        back.reset();
        back.bind_all(k, w, now).run();
      }
    }
    auto pick = db_->prepare(
        "SELECT j.key, j.job, COALESCE(j.model_path,''), j.attempts FROM jobs j JOIN sweep_jobs s "
        "ON s.job_key=j.key WHERE s.sweep_id=?1 AND j.status='pending' "
        "ORDER BY (COALESCE(j.model_path,'')=?2) DESC, j.cost DESC, j.key LIMIT 1");
    pick.bind_all(sweep_id, prefer_model_path);
    if (!pick.step()) return;
    ClaimedJob c;
    c.key = pick.text(0);
    c.job = nlohmann::json::parse(pick.text(1));
    c.model_path = pick.text(2);
    c.attempts = pick.int64(3) + 1;
    db_->prepare(
           "UPDATE jobs SET status='running', worker=?2, heartbeat=?3, attempts=attempts+1, updated=?3 "
           "WHERE key=?1")
        .bind_all(c.key, worker, now)
        .run();
    out = std::move(c);
  });
  return out;
}

bool Store::heartbeat(const std::string& key, const std::string& worker) {
  auto st = db_->prepare("UPDATE jobs SET heartbeat=?3 WHERE key=?1 AND worker=?2 AND status='running'");
  st.bind_all(key, worker, now_seconds()).run();
  return db_->changes() > 0;
}

bool Store::complete(const std::string& key, const std::string& worker, const nlohmann::json& metrics,
                     double started, double finished, const Environment& env) {
  bool ok = false;
  db_->immediate([&] {
    db_->prepare(
           "UPDATE jobs SET status='done', worker=NULL, error=NULL, updated=?3 WHERE key=?1 AND worker=?2 AND "
           "status='running'")
        .bind_all(key, worker, finished)
        .run();
    if (db_->changes() == 0) return;
    db_->prepare(
           "INSERT INTO results(job_key, metrics, started, finished, seconds, worker, host, gpu, torch_version, "
           "cuda_version, git_commit, kvx_version) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)")
        .bind_all(key, metrics.dump(), started, finished, finished - started, worker, env.host, env.gpu,
                  env.torch_version, env.cuda_version, env.git_commit, env.kvx_version)
        .run();
    ok = true;
  });
  return ok;
}

void Store::fail(const std::string& key, const std::string& worker, const std::string& err) {
  db_->immediate([&] {
    db_->prepare(
           "UPDATE jobs SET failures=failures+1, error=?3, worker=NULL, updated=?4, "
           "status=CASE WHEN failures+1>retries THEN 'failed' ELSE 'pending' END "
           "WHERE key=?1 AND worker=?2 AND status='running'")
        .bind_all(key, worker, err, now_seconds())
        .run();
  });
}

void Store::release(const std::string& key, const std::string& worker) {
  db_->immediate([&] {
    db_->prepare(
           "UPDATE jobs SET status='pending', worker=NULL, updated=?3 WHERE key=?1 AND worker=?2 AND "
           "status='running'")
        .bind_all(key, worker, now_seconds())
        .run();
  });
}

void Store::fail_worker_jobs(const std::string& worker, const std::string& err) {
  db_->immediate([&] {
    db_->prepare(
           "UPDATE jobs SET failures=failures+1, error=?2, worker=NULL, updated=?3, "
           "status=CASE WHEN failures+1>retries THEN 'failed' ELSE 'pending' END "
           "WHERE worker=?1 AND status='running'")
        .bind_all(worker, err, now_seconds())
        .run();
  });
}

void Store::release_worker_jobs(const std::string& worker) {
  db_->immediate([&] {
    db_->prepare("UPDATE jobs SET status='pending', worker=NULL, updated=?2 WHERE worker=?1 AND status='running'")
        .bind_all(worker, now_seconds())
        .run();
  });
}

std::vector<ResultRow> Store::results(const std::optional<std::string>& sweep) {
  if (empty_) return {};
  auto st = db_->prepare(
      "SELECT r.id, j.key, COALESCE(j.model,''), COALESCE(j.dataset,''), COALESCE(j.protocol,''), "
      "COALESCE(j.method,''), COALESCE(j.label,''), j.params, r.metrics, COALESCE(r.seconds,0), "
      "COALESCE(r.finished,0) FROM results r JOIN jobs j ON j.key=r.job_key "
      "WHERE j.status='done' AND (?1=0 OR j.key IN (SELECT sj.job_key FROM sweep_jobs sj JOIN sweeps s "
      "ON s.id=sj.sweep_id WHERE s.name=?2)) ORDER BY r.id");
  st.bind_all(static_cast<int64_t>(sweep ? 1 : 0), sweep ? *sweep : std::string());
  std::vector<ResultRow> out;
  while (st.step()) {
    ResultRow r;
    r.id = st.int64(0);
    r.key = st.text(1);
    r.model = st.text(2);
    r.dataset = st.text(3);
    r.protocol = st.text(4);
    r.method = st.text(5);
    r.label = st.text(6);
    r.params = nlohmann::json::parse(st.text(7));
    r.metrics = nlohmann::json::parse(st.text(8));
    r.seconds = st.real(9);
    r.finished = st.real(10);
    out.push_back(std::move(r));
  }
  return out;
}

std::optional<std::string> Store::cached_hash(const std::string& path, int64_t size, int64_t mtime_ns) {
  if (empty_) return std::nullopt;
  auto st = db_->prepare("SELECT sha256 FROM file_hashes WHERE path=?1 AND size=?2 AND mtime_ns=?3");
  st.bind_all(path, size, mtime_ns);
  if (!st.step()) return std::nullopt;
  return st.text(0);
}

void Store::store_hash(const std::string& path, int64_t size, int64_t mtime_ns, const std::string& sha) {
  db_->prepare("INSERT OR REPLACE INTO file_hashes(path, size, mtime_ns, sha256) VALUES(?1,?2,?3,?4)")
      .bind_all(path, size, mtime_ns, sha)
      .run();
}

}  // namespace kvx
