#include "core/grid/identity.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>

#include "core/common/build_info.h"
#include "core/common/error.h"
#include "core/common/sha256.h"
#include "core/store/store.h"

namespace fs = std::filesystem;

namespace kvx::grid {

std::string absolute_path(const std::string& path, const std::string& base_dir) {
  fs::path p(path);
  if (p.is_relative()) p = fs::path(base_dir) / p;
  return fs::absolute(p).lexically_normal().string();
}

std::string base_name(const std::string& path) { return fs::path(path).filename().string(); }

std::string FileHasher::hash(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) throw error("{}: cannot read file", path);
  int64_t size = st.st_size;
  int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  auto it = cache_.find(path);
  if (it != cache_.end() && it->second.size == size && it->second.mtime_ns == mtime) return it->second.sha;
  if (store_) {
    if (auto sha = store_->cached_hash(path, size, mtime)) {
      cache_[path] = {size, mtime, *sha, false};
      return *sha;
    }
  }
  std::string sha = sha256_file(path);
  bytes_hashed_ += size;
  cache_[path] = {size, mtime, sha, true};
  return sha;
}

void FileHasher::save_to(Store& store) const {
  for (const auto& [path, e] : cache_)
    if (e.fresh) store.store_hash(path, e.size, e.mtime_ns, e.sha);
}

ModelIdentity model_identity(const std::string& dir, FileHasher& hasher) {
  if (!fs::is_directory(dir)) throw error("model folder '{}' does not exist", dir);
  if (!fs::is_regular_file(fs::path(dir) / "config.json"))
    throw error("model folder '{}' has no config.json", dir);
  std::vector<std::string> files = {"config.json"};
  if (fs::is_regular_file(fs::path(dir) / "tokenizer.json")) files.push_back("tokenizer.json");
  std::vector<std::string> weights;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::string n = e.path().filename().string();
    if (e.is_regular_file() && n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0)
      weights.push_back(n);
  }
  if (weights.empty()) throw error("model folder '{}' has no *.safetensors weights", dir);
  std::sort(weights.begin(), weights.end());
  files.insert(files.end(), weights.begin(), weights.end());
  // Hash of per-file hashes, so that the per-file cache applies.
  std::string manifest;
  ModelIdentity id;
  for (const auto& f : files) {
    std::string p = (fs::path(dir) / f).string();
    manifest += f + " " + hasher.hash(p) + "\n";
    if (f != "config.json" && f != "tokenizer.json") id.weight_bytes += static_cast<int64_t>(fs::file_size(p));
  }
  id.hash = sha256_hex(manifest);
  return id;
}

std::string job_key(const nlohmann::json& job) {
  nlohmann::json k;
  const auto& m = job.at("model");
  if (m.is_null()) {
    k["model"] = nullptr;
  } else {
    k["model"] = {{"hash", m.at("hash")}};
    if (m.contains("dtype")) k["model"]["dtype"] = m["dtype"];
  }
  const auto& d = job.at("dataset");
  if (d.is_null()) k["dataset"] = nullptr;
  else k["dataset"] = {{"name", base_name(d.at("path").get<std::string>())}, {"hash", d.at("hash")}};
  k["protocol"] = job.at("protocol");
  // how many sequences share a forward changes no sequence's numbers (experiments/text_windows.h)
  k["protocol"].erase("batch");
  k["method"] = job.at("method");
  k["eval_code_version"] = kEvalCodeVersion;
  return sha256_hex(k.dump());
}

}  // namespace kvx::grid
