#include "core/store/merge.h"

#include <filesystem>

#include "core/common/error.h"
#include "core/store/sqlite_db.h"
#include "core/store/store.h"

namespace fs = std::filesystem;

namespace kvx {
namespace {

// done > failed > pending (running counts as pending: its worker is not in OUT).
constexpr const char* kRank =
    "CASE %s WHEN 'done' THEN 2 WHEN 'failed' THEN 1 ELSE 0 END";

std::string rank(const char* col) {
  std::string s = kRank;
  return s.replace(s.find("%s"), 2, col);
}

std::string canonical(const std::string& p) {
  std::error_code ec;
  auto c = fs::weakly_canonical(fs::absolute(p), ec);
  return ec ? fs::absolute(p).lexically_normal().string() : c.string();
}

void merge_one(Store& out, const std::string& in, MergeReport& rep) {
  { Store check(in, Store::Access::ReadOnly); }  // kvx database, known schema version: or throws
  sql::Db& db = out.db();
  db.prepare("ATTACH DATABASE ?1 AS src").bind(1, in).run();
  try {
    db.immediate([&] {
      const double now = now_seconds();
      db.prepare(
            "INSERT OR IGNORE INTO sweeps(name, config_path, config_text, created, updated) "
            "SELECT name, config_path, config_text, created, updated FROM src.sweeps")
          .run();
      // Conflicts: done on both sides, different metrics. OUT's row stays.
      {
        auto st = db.prepare(
            "SELECT r.job_key, o.metrics, r.metrics FROM src.results r JOIN src.jobs j ON j.key=r.job_key "
            "JOIN main.results o ON o.job_key=r.job_key JOIN main.jobs m ON m.key=r.job_key "
            "WHERE j.status='done' AND m.status='done' AND o.metrics<>r.metrics ORDER BY r.job_key");
        while (st.step()) rep.conflicts.push_back({st.text(0), in, st.text(1), st.text(2)});
      }
      {
        auto st = db.prepare(
            "SELECT COUNT(*) FROM src.jobs j JOIN main.jobs m ON m.key=j.key WHERE j.status=m.status OR "
            "(j.status IN ('pending','running') AND m.status IN ('pending','running'))");
        if (st.step()) rep.unchanged += st.int64(0);
      }
      // Jobs whose state in the input is further along than in OUT take the input's state.
      std::string upgrade_where = "FROM src.jobs j JOIN main.jobs m ON m.key=j.key WHERE " + rank("j.status") +
                                  " > " + rank("m.status");
      std::vector<std::string> upgraded;
      {
        auto st = db.prepare(("SELECT j.key " + upgrade_where).c_str());
        while (st.step()) upgraded.push_back(st.text(0));
      }
      for (const auto& k : upgraded) {
        db.prepare(
              "UPDATE main.jobs SET status=(SELECT status FROM src.jobs WHERE key=?1), "
              "attempts=(SELECT attempts FROM src.jobs WHERE key=?1), "
              "failures=(SELECT failures FROM src.jobs WHERE key=?1), "
              "error=(SELECT error FROM src.jobs WHERE key=?1), worker=NULL, heartbeat=NULL, updated=?2 "
              "WHERE key=?1")
            .bind_all(k, now)
            .run();
        db.prepare("DELETE FROM main.results WHERE job_key=?1").bind(1, k).run();
      }
      rep.jobs_updated += static_cast<int64_t>(upgraded.size());
      db.prepare(
            "INSERT INTO main.jobs(key, job, model, dataset, protocol, method, label, params, model_path, cost, "
            "status, attempts, failures, retries, worker, heartbeat, error, created, updated) "
            "SELECT key, job, model, dataset, protocol, method, label, params, model_path, cost, "
            "CASE status WHEN 'running' THEN 'pending' ELSE status END, attempts, failures, retries, NULL, NULL, "
            "error, created, updated FROM src.jobs WHERE key NOT IN (SELECT key FROM main.jobs)")
          .run();
      rep.jobs_added += db.changes();
      // Result rows of done jobs that OUT has no result for (new jobs and upgraded ones).
      db.prepare(
            "INSERT INTO main.results(job_key, metrics, started, finished, seconds, worker, host, gpu, "
            "torch_version, cuda_version, git_commit, kvx_version) "
            "SELECT r.job_key, r.metrics, r.started, r.finished, r.seconds, r.worker, r.host, r.gpu, "
            "r.torch_version, r.cuda_version, r.git_commit, r.kvx_version FROM src.results r "
            "JOIN src.jobs j ON j.key=r.job_key JOIN main.jobs m ON m.key=r.job_key "
            "WHERE j.status='done' AND m.status='done' AND r.job_key NOT IN (SELECT job_key FROM main.results) "
            "ORDER BY r.id")
          .run();
      rep.results_added += db.changes();
      db.prepare(
            "INSERT OR IGNORE INTO main.sweep_jobs(sweep_id, job_key) SELECT m.id, sj.job_key FROM src.sweep_jobs sj "
            "JOIN src.sweeps s ON s.id=sj.sweep_id JOIN main.sweeps m ON m.name=s.name")
          .run();
      rep.sweep_links_added += db.changes();
      db.prepare("INSERT OR IGNORE INTO main.file_hashes SELECT path, size, mtime_ns, sha256 FROM src.file_hashes")
          .run();
    });
  } catch (...) {
    db.exec("DETACH DATABASE src");
    throw;
  }
  db.exec("DETACH DATABASE src");
  rep.inputs++;
}

}  // namespace

MergeReport merge_databases(const std::string& out_path, const std::vector<std::string>& inputs) {
  if (inputs.empty()) throw error("kvx merge: no input databases");
  const std::string out_c = canonical(out_path);
  for (const auto& in : inputs) {
    if (!fs::exists(in)) throw error("{}: no such database", in);
    if (canonical(in) == out_c) throw error("{}: the output database cannot also be an input", in);
  }
  for (const auto& in : inputs) { Store check(in, Store::Access::ReadOnly); }  // all inputs valid before writing
  if (fs::path(out_path).has_parent_path()) fs::create_directories(fs::path(out_path).parent_path());
  Store out(out_path, Store::Access::ReadWrite);
  MergeReport rep;
  for (const auto& in : inputs) merge_one(out, in, rep);
  return rep;
}

}  // namespace kvx
