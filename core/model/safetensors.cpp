#include "core/model/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/common/error.h"

namespace kvx {
namespace {

// Element sizes of every dtype the safetensors format defines; only three are loadable.
int64_t dtype_size(const std::string& d) {
  static const std::map<std::string, int64_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"I16", 2}, {"U16", 2},
      {"F16", 2},  {"BF16", 2}, {"I32", 4}, {"U32", 4},     {"F32", 4},     {"F64", 8}, {"I64", 8},
      {"U64", 8}};
  auto it = sizes.find(d);
  return it == sizes.end() ? -1 : it->second;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw error("{}: cannot open safetensors file: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw error("{}: cannot stat safetensors file: {}", path, std::strerror(errno));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw error("{}: file is {} bytes, too short for a safetensors header (truncated?)", path, size);
  }
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) throw error("{}: cannot mmap safetensors file: {}", path, std::strerror(errno));
  f->map_ = m;
  f->map_size_ = size;
  const uint8_t* bytes = static_cast<const uint8_t*>(m);

  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | bytes[i];  // little-endian u64
  if (hlen > size - 8)
    throw error("{}: header length {} exceeds the file size {} minus 8 (truncated or not a safetensors file)",
                path, hlen, size);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(reinterpret_cast<const char*>(bytes + 8),
                                   reinterpret_cast<const char*>(bytes + 8 + hlen));
  } catch (const nlohmann::json::exception& e) {
    throw error("{}: safetensors header is not valid JSON: {}", path, e.what());
  }
  if (!header.is_object()) throw error("{}: safetensors header must be a JSON object", path);
  f->data_ = bytes + 8 + hlen;
  const uint64_t data_size = size - 8 - hlen;

  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const std::string& name = it.key();
    const auto& v = it.value();
    if (!v.is_object() || !v.contains("dtype") || !v["dtype"].is_string() || !v.contains("shape") ||
        !v["shape"].is_array() || !v.contains("data_offsets") || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2)
      throw error("{}: tensor '{}': header entry must have dtype (string), shape (list) and data_offsets "
                  "([begin, end])", path, name);
    Entry e;
    e.dtype = v["dtype"].get<std::string>();
    const int64_t esize = dtype_size(e.dtype);
    if (esize < 0) throw error("{}: tensor '{}' has unknown dtype '{}'", path, name, e.dtype);
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        throw error("{}: tensor '{}' has an invalid shape {} (dimensions must be non-negative integers)", path,
                    name, v["shape"].dump());
      const uint64_t dim = d.get<uint64_t>();
      if (dim > (uint64_t(1) << 62) || __builtin_mul_overflow(numel, dim, &numel) || numel > (uint64_t(1) << 62))
        throw error("{}: tensor '{}' shape {} overflows", path, name, v["shape"].dump());
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& off = v["data_offsets"];
    if (!off[0].is_number_unsigned() && !(off[0].is_number_integer() && off[0].get<int64_t>() >= 0))
      throw error("{}: tensor '{}' has invalid data_offsets {}", path, name, off.dump());
    if (!off[1].is_number_unsigned() && !(off[1].is_number_integer() && off[1].get<int64_t>() >= 0))
      throw error("{}: tensor '{}' has invalid data_offsets {}", path, name, off.dump());
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    if (e.begin > e.end)
      throw error("{}: tensor '{}' has data_offsets [{}, {}] with begin > end", path, name, e.begin, e.end);
    if (e.end > data_size)
      throw error("{}: tensor '{}' has data_offsets [{}, {}] outside the data region of {} bytes (truncated "
                  "file?)", path, name, e.begin, e.end, data_size);
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(esize), &nbytes) || nbytes != e.end - e.begin)
      throw error("{}: tensor '{}' occupies {} bytes but shape {} of {} needs {} bytes", path, name,
                  e.end - e.begin, shape_str(e.shape), e.dtype, numel * esize);
    f->entries_.emplace(name, std::move(e));
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const SafetensorsFile::Entry& SafetensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw error("{}: missing tensor '{}'", path_, name);
  return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

at::Tensor SafetensorsFile::load(const std::string& name, at::ScalarType dtype, at::Device device) const {
  const Entry& e = entry(name);
  at::ScalarType src;
  if (e.dtype == "BF16") src = at::kBFloat16;
  else if (e.dtype == "F16") src = at::kHalf;
  else if (e.dtype == "F32") src = at::kFloat;
  else throw error("{}: tensor '{}' has dtype {}, kvx loads only BF16, F16 and F32", path_, name, e.dtype);
  void* ptr = const_cast<uint8_t*>(data_ + e.begin);  // read-only mapping; from_blob never writes
  at::Tensor view = at::from_blob(ptr, e.shape, at::TensorOptions().dtype(src).device(at::kCPU));
  // copy=true: the result must not alias the mapping, which is unmapped with this object.
  return view.to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
}

Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  const std::string index = dir + "/model.safetensors.index.json";
  std::ifstream in(index);
  if (!in) {
    const std::string single = dir + "/model.safetensors";
    if (::access(single.c_str(), R_OK) != 0)
      throw error("{}: no model.safetensors or model.safetensors.index.json in the model folder", dir);
    open_[single] = SafetensorsFile::open(single);
    return;
  }
  index_path_ = index;
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    throw error("{}: invalid JSON: {}", index, e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw error("{}: missing object 'weight_map'", index);
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string()) throw error("{}: weight_map['{}'] must be a file name", index, it.key());
    const std::string file = it.value().get<std::string>();
    if (file.empty() || file.find('/') != std::string::npos || file.find("..") != std::string::npos)
      throw error("{}: weight_map['{}'] = '{}' is not a plain file name in the model folder", index, it.key(), file);
    where_[it.key()] = file;
  }
}

Checkpoint::~Checkpoint() = default;

bool Checkpoint::has(const std::string& name) const {
  if (!index_path_.empty()) return where_.count(name) > 0;
  return open_.begin()->second->has(name);
}

SafetensorsFile& Checkpoint::file_for(const std::string& name) {
  if (index_path_.empty()) {
    auto& f = *open_.begin()->second;
    if (!f.has(name)) throw error("{}: missing tensor '{}'", f.path(), name);
    return f;
  }
  auto w = where_.find(name);
  if (w == where_.end()) throw error("{}: missing tensor '{}' (not in weight_map)", index_path_, name);
  const std::string path = dir_ + "/" + w->second;
  auto it = open_.find(path);
  if (it == open_.end()) {
    if (::access(path.c_str(), R_OK) != 0)
      throw error("{}: missing shard file (listed in model.safetensors.index.json for tensor '{}')", path, name);
    it = open_.emplace(path, SafetensorsFile::open(path)).first;
  }
  if (!it->second->has(name))
    throw error("{}: missing tensor '{}' (model.safetensors.index.json says it is in this shard)", path, name);
  return *it->second;
}

at::Tensor Checkpoint::load(const std::string& name, const std::vector<int64_t>& expected_shape,
                            at::ScalarType dtype, at::Device device) {
  SafetensorsFile& f = file_for(name);
  const auto& e = f.entry(name);
  if (!expected_shape.empty() && e.shape != expected_shape)
    throw error("{}: tensor '{}' has shape {}, expected {} from config.json", f.path(), name, shape_str(e.shape),
                shape_str(expected_shape));
  return f.load(name, dtype, device);
}

}  // namespace kvx
