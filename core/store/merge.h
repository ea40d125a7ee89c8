// `kvx merge OUT.db SHARD.db...`: union of kvx databases (the shards of a Slurm array, or any
// other runs) into OUT, idempotently:
// - a job is identified by its key: a key already in OUT keeps its row; merging the same
//   shard twice changes nothing;
// - a job done in a shard but pending/failed in OUT takes the shard's state and result row
//   (done > failed > pending); `running` rows of a shard arrive as pending;
// - a key done in both with different metrics is a conflict: reported, OUT's row is kept;
// - sweeps are matched by name and their job lists unioned; file hashes are unioned.
// Each input is checked first (a kvx database, schema version this kvx knows) and merged in
// one transaction, so a failed merge leaves OUT as it was before that input.
#pragma once
#include <string>
#include <vector>

namespace kvx {

struct MergeConflict {
  std::string key, source, kept_metrics, other_metrics;
};

struct MergeReport {
  int inputs = 0;
  int64_t jobs_added = 0, jobs_updated = 0, results_added = 0, unchanged = 0, sweep_links_added = 0;
  std::vector<MergeConflict> conflicts;
};

MergeReport merge_databases(const std::string& out, const std::vector<std::string>& inputs);

}  // namespace kvx
