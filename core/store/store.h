// The kvx results database (SQLite, WAL). Contract:
// - Opening never changes a file that is not a kvx database (non-SQLite file, SQLite file
//   with foreign tables, newer schema version): it throws kvx::Error naming the file.
// - A job row is keyed by its SHA-256 job key; identical jobs across sweeps share one row
//   (sweep_jobs links them), so a job is computed once whatever sweep asks for it.
// - Claims are atomic (one BEGIN IMMEDIATE transaction); a finished job's metrics are written
//   in the same transaction that marks it done, and only by the worker that holds it, so a
//   job never gets two result rows.
// - Running jobs whose heartbeat is older than the lease, or whose worker process on this
//   host is gone, go back to pending without counting as a failure.
#pragma once
#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kvx {

namespace sql {
class Db;
}

// One expanded job as the grid produces it.
struct JobSpec {
  std::string key;
  nlohmann::json job;  // what run_job receives
  std::string model, dataset, protocol, method, label;  // names for tables ("" when absent)
  nlohmann::json params = nlohmann::json::object();     // flattened {"key.bits": 4, ...}
  double cost = 1;         // estimated relative cost: longer jobs are claimed first
  std::string model_path;  // workers prefer jobs of the model they have loaded
};

struct ClaimedJob {
  std::string key;
  nlohmann::json job;
  std::string model_path;
  int64_t attempts = 0;  // including this one
};

// Provenance stored with every result row.
struct Environment {
  std::string host, gpu, torch_version, cuda_version, git_commit, kvx_version;
};

struct SweepCounts {
  int64_t total = 0, done = 0, running = 0, failed = 0, pending = 0;
};

struct SweepInfo {
  int64_t id = 0;
  std::string name, config_path;
  double created = 0, updated = 0;
};

struct JobState {
  std::string key, model, dataset, protocol, method, label, status, error, worker;
  nlohmann::json params;
  int64_t attempts = 0, failures = 0;
};

struct ResultRow {
  int64_t id = 0;
  std::string key, model, dataset, protocol, method, label;
  nlohmann::json params, metrics;
  double seconds = 0, finished = 0;
};

double now_seconds();
// "host:pid" of this process: identifies a worker in the jobs table.
std::string worker_identity();

class Store {
 public:
  enum class Access { ReadWrite, ReadOnly };
  static constexpr int kSchemaVersion = 1;

  // ReadWrite creates the file and schema when missing and migrates older schemas; ReadOnly
  // requires an existing kvx database and writes nothing.
  Store(const std::string& path, Access access);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::string& path() const { return path_; }

  // --- sweeps and jobs -----------------------------------------------------------------
  // Creates or updates the sweep called `name`, inserts jobs not yet known (existing rows and
  // their results are kept), makes the sweep's job set exactly `jobs`, applies `retries`
  // (a failed job with fewer failures becomes pending again), and with retry_failed resets
  // the sweep's failed jobs. One transaction. Returns the sweep id.
  int64_t upsert_sweep(const std::string& name, const std::string& config_path,
                       const std::string& config_text, const std::vector<JobSpec>& jobs,
                       int retries, bool retry_failed);
  std::optional<SweepInfo> find_sweep(const std::string& name);
  std::vector<SweepInfo> sweeps();
  // status per job key ("" when the key is unknown); read-only.
  std::map<std::string, std::string> statuses(const std::vector<std::string>& keys);
  SweepCounts counts(int64_t sweep_id);
  std::vector<JobState> jobs(int64_t sweep_id, const std::string& status_filter = "");
  // Jobs per second over results finished after `since` (0 when fewer than 2 results).
  double throughput(int64_t sweep_id, double since);

  // --- workers -------------------------------------------------------------------------
  std::optional<ClaimedJob> claim(int64_t sweep_id, const std::string& worker,
                                  const std::string& prefer_model_path, double lease_s);
  // Returns false when the worker no longer holds the job (it was reclaimed).
  bool heartbeat(const std::string& key, const std::string& worker);
  // Marks done and writes the result row in one transaction; false when not held any more.
  bool complete(const std::string& key, const std::string& worker, const nlohmann::json& metrics,
                double started, double finished, const Environment& env);
  // Records a failed attempt: back to pending while failures <= retries, else failed.
  void fail(const std::string& key, const std::string& worker, const std::string& error);
  // Gives a held job back (interrupted, not a failure).
  void release(const std::string& key, const std::string& worker);
  // For a worker that died (the parent saw it): its running jobs count one failure each.
  void fail_worker_jobs(const std::string& worker, const std::string& error);
  void release_worker_jobs(const std::string& worker);

  // --- reporting -----------------------------------------------------------------------
  // Every result row, optionally restricted to one sweep (by name, bound as a parameter).
  std::vector<ResultRow> results(const std::optional<std::string>& sweep);
  // result row count per job key (tests and diagnostics)

  // --- file hash cache (path, size, mtime) -> sha256 -------------------------------------
  std::optional<std::string> cached_hash(const std::string& path, int64_t size, int64_t mtime_ns);
  void store_hash(const std::string& path, int64_t size, int64_t mtime_ns, const std::string& sha);

  sql::Db& db() { return *db_; }

 private:
  void check_existing(bool file_existed);
  void migrate();
  std::string path_;
  bool read_only_;
  bool empty_ = false;  // read-only view of a database whose schema is not created yet
  std::unique_ptr<sql::Db> db_;
};

}  // namespace kvx
