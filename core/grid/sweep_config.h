// A sweep config (YAML, see configs/README.md) loaded, validated and expanded into jobs.
// Everything is checked before anything is written anywhere: unknown keys, names, files,
// every protocol and method variant (through resolve_protocol / resolve_method). Errors are
// one kvx::Error "FILE:LINE:COL: message" pointing at the offending YAML node.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/store/store.h"

namespace kvx::grid {

class FileHasher;

// The shortest lease a sweep takes: a worker beats every lease/4 and at least 0.2 s apart, so a
// shorter lease would let healthy jobs be reclaimed by another runner.
constexpr double kMinLeaseSeconds = 1.0;

struct SweepConfig {
  std::string file;         // path as given
  std::string text;         // the config text (stored with the sweep)
  std::string name;
  std::string db;           // absolute; "" when the config names none
  int workers = 1;
  std::string device = "cpu";  // cpu | cuda
  // Worker placement (`devices:`): "" = from `device` (cpu: `workers` CPU workers; cuda: one
  // worker per visible GPU), "auto" (one worker per visible GPU, CPU workers when none),
  // "cpu", or "groups": one worker per entry of device_groups (GPU indices; with several,
  // the model's layers are split over the group).
  std::string devices;
  std::vector<std::vector<int>> device_groups;
  // `max_memory: {0: 20GiB, 1: 40GiB}`: per-GPU byte limits (index within a group) for the
  // layer split; empty = even split by layer count.
  std::vector<std::pair<int, int64_t>> max_memory;
  std::string devices_where;  // "FILE:LINE:COL" of `devices:` (runtime placement errors)
  int retries = 1;
  double lease_seconds = 60;  // at least kMinLeaseSeconds
  std::vector<JobSpec> jobs;  // unique keys, in expansion order
};

// The config's `db:` as an absolute path ("" when absent); throws on unreadable YAML.
std::string config_db_path(const std::string& path);

SweepConfig load_sweep(const std::string& path, FileHasher& hasher);
// Same from text (tests); relative paths resolve against base_dir.
SweepConfig parse_sweep(const std::string& text, const std::string& file_label, const std::string& base_dir,
                        FileHasher& hasher);

}  // namespace kvx::grid
