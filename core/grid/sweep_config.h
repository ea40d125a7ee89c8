// A sweep config (YAML, see configs/README.md) loaded, validated and expanded into jobs.
// Everything is checked before anything is written anywhere: unknown keys, names, files,
// every protocol and method variant (through resolve_protocol / resolve_method). Errors are
// one kvx::Error "FILE:LINE:COL: message" pointing at the offending YAML node.
#pragma once
#include <string>
#include <vector>

#include "core/store/store.h"

namespace kvx::grid {

class FileHasher;

struct SweepConfig {
  std::string file;         // path as given
  std::string text;         // the config text (stored with the sweep)
  std::string name;
  std::string db;           // absolute; "" when the config names none
  int workers = 1;
  std::string device = "cpu";  // cpu | cuda
  int retries = 1;
  double lease_seconds = 60;
  std::vector<JobSpec> jobs;  // unique keys, in expansion order
};

// The config's `db:` as an absolute path ("" when absent); throws on unreadable YAML.
std::string config_db_path(const std::string& path);

SweepConfig load_sweep(const std::string& path, FileHasher& hasher);
// Same from text (tests); relative paths resolve against base_dir.
SweepConfig parse_sweep(const std::string& text, const std::string& file_label, const std::string& base_dir,
                        FileHasher& hasher);

}  // namespace kvx::grid
