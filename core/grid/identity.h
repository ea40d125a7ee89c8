// Content identity of models and datasets, and the job key.
// A model is identified by the content of config.json, tokenizer.json and every *.safetensors
// file (not by its path: moving the folder keeps every key); a dataset by its file name and
// content. The job key is sha256 of the canonical JSON (sorted keys) of
//   {"model": {"hash", "dtype"?}, "dataset": {"name", "hash"}, "protocol": resolved,
//    "method": resolved, "eval_code_version": kEvalCodeVersion}.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace kvx {
class Store;
}

namespace kvx::grid {

// Hashes each file once per process; with a store, also reuses hashes recorded by earlier runs
// for the same (path, size, mtime). New hashes are written only by save_to().
class FileHasher {
 public:
  explicit FileHasher(Store* lookup = nullptr) : store_(lookup) {}
  std::string hash(const std::string& path);  // throws kvx::Error naming the file
  void save_to(Store& store) const;
  int64_t bytes_hashed() const { return bytes_hashed_; }

 private:
  struct Entry {
    int64_t size, mtime_ns;
    std::string sha;
    bool fresh;
  };
  Store* store_;
  std::map<std::string, Entry> cache_;
  int64_t bytes_hashed_ = 0;
};

struct ModelIdentity {
  std::string hash;
  int64_t weight_bytes = 0;
};
// dir must hold config.json; throws kvx::Error naming what is missing.
ModelIdentity model_identity(const std::string& dir, FileHasher& hasher);

std::string job_key(const nlohmann::json& job);  // job as given to run_job (paths ignored)

std::string absolute_path(const std::string& path, const std::string& base_dir);
std::string base_name(const std::string& path);

}  // namespace kvx::grid
