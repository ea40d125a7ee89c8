// Read-only, memory-mapped safetensors checkpoints (single file or sharded through
// model.safetensors.index.json). The header is validated before any tensor is touched: header
// length within the file, every tensor's data_offsets inside the data region with begin <= end,
// byte size == numel * dtype size, shapes non-negative and overflow-checked. Tensors are copied
// out of the mapping into the requested dtype/device (BF16, F16, F32 sources supported); every
// failure is a kvx::Error naming the file and the tensor.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kvx {

class SafetensorsFile {
 public:
  struct Entry {
    std::string dtype;           // as written: "BF16", "F16", "F32", ...
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0; // byte offsets inside the data region
  };

  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const { return entries_.count(name) > 0; }
  const Entry& entry(const std::string& name) const;  // throws when missing
  std::vector<std::string> names() const;
  // A copy (never a view of the mapping) converted to dtype on device.
  at::Tensor load(const std::string& name, at::ScalarType dtype, at::Device device) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data region
  std::map<std::string, Entry> entries_;
};

// All tensors of a model folder: model.safetensors, or the shards listed in
// model.safetensors.index.json (opened on first use).
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& dir);
  ~Checkpoint();
  bool has(const std::string& name) const;
  // expected_shape empty = any shape. Errors name the tensor and the file it should be in.
  at::Tensor load(const std::string& name, const std::vector<int64_t>& expected_shape, at::ScalarType dtype,
                  at::Device device);

 private:
  SafetensorsFile& file_for(const std::string& name);
  std::string dir_;
  std::string index_path_;                   // empty for a single-file checkpoint
  std::map<std::string, std::string> where_; // tensor -> file name (sharded)
  std::map<std::string, std::unique_ptr<SafetensorsFile>> open_;
};

}  // namespace kvx
